"""``shipyard stream`` as a child process (the demo and the tests): started, ready-checked
through its log, stopped with SIGTERM so the workers finish their batches."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import TracebackType

from shipyard.children import Child
from shipyard.errors import UnavailableError
from shipyard.settings import Settings
from shipyard.stream.scorer import ScorerConfig

READY_LINE = "shipyard.stream.scorer: scoring "


def options(config: ScorerConfig, redelivery_ms: float) -> list[str]:
    """The ``shipyard stream`` options that run a scorer with ``config``."""
    command = ["--model", config.model, "--queue", config.queue, "--results", config.results]
    command += ["--batch-size", str(config.batch_size), "--max-wait-ms", str(config.max_wait_ms)]
    command += ["--max-deliveries", str(config.max_deliveries)]
    command += ["--redelivery-ms", str(redelivery_ms)]
    if config.dead_letter is not None:
        command += ["--dead-letter", config.dead_letter]
    if config.results_max_length is not None:
        command += ["--results-max-length", str(config.results_max_length)]
    return command


class StreamProcess:
    """A pool of ``workers`` scorer processes with ``settings`` (home, database, broker…)."""

    def __init__(
        self,
        settings: Settings,
        config: ScorerConfig,
        *,
        workers: int = 2,
        redelivery_ms: float = 30_000,
        log: Path | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.workers = workers
        self.log = log or settings.home / "logs" / "stream.log"
        self.ready_timeout_s = ready_timeout_s
        command = [sys.executable, "-m", "shipyard", "stream", "--workers", str(workers)]
        # Settings go by environment, so that no password shows in the process list. Its
        # own session, so that stopping it also reaches workers a crashed pool left behind;
        # it dies with this process (SIGTERM: the workers finish their batches): a killed
        # demo or test run leaves no scorers behind.
        self.child = Child(
            [*command, *options(config, redelivery_ms)],
            env=settings.child_env(),
            log=self.log,
            new_session=True,
            die_with_parent=True,
            name="the stream workers",
        )

    def start(self) -> StreamProcess:
        """Start the pool and wait (bounded) until every worker has declared its queues
        and loaded the model."""
        self.child.start(
            self.child.logged(READY_LINE, self.workers), timeout_s=self.ready_timeout_s
        )
        return self

    def worker_pids(self) -> list[int]:
        """Process ids of the workers running now (children of the pool)."""
        return [process.pid for process in self.child.children(recursive=False)]

    def kill_worker(self) -> int:
        """SIGKILL one worker, as a crash would; the pool starts another. Its pid."""
        workers = self.child.children(recursive=False)
        if not workers:
            raise UnavailableError("no stream worker is running")
        workers[0].send_signal(signal.SIGKILL)
        return workers[0].pid

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the pool (workers finish their batches); kill it all past the timeout."""
        return self.child.stop(timeout_s)

    def __enter__(self) -> StreamProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

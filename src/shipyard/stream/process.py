"""``shipyard stream`` as a child process (the demo and the tests): started, ready-checked
through its log, stopped with SIGTERM so the workers finish their batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from shipyard.errors import UnavailableError
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
    """A pool of ``workers`` scorer processes over a home and a broker."""

    def __init__(
        self,
        home: Path,
        config: ScorerConfig,
        broker_url: str,
        *,
        workers: int = 2,
        database_url: str | None = None,
        redelivery_ms: float = 30_000,
        log: Path | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.workers = workers
        self.log = log or home / "logs" / "stream.log"
        self.ready_timeout_s = ready_timeout_s
        self.command = [sys.executable, "-m", "shipyard", "--home", str(home)]
        if database_url is not None:
            self.command += ["--database-url", database_url]
        self.command += ["stream", "--workers", str(workers), *options(config, redelivery_ms)]
        # By environment, so that no password shows in the process list.
        self.env = dict(os.environ) | {"SHIPYARD_BROKER_URL": broker_url}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamProcess:
        """Start the pool and wait (bounded) until every worker has declared its queues
        and loaded the model."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.log.read_text(errors="replace").count(READY_LINE) >= self.workers:
                return self
            time.sleep(0.1)
        self.stop()
        raise UnavailableError(
            f"the stream workers did not start: {self.log.read_text(errors='replace')[-2000:]}"
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the workers running now (children of the pool)."""
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def kill_worker(self) -> int:
        """SIGKILL one worker, as a crash would; the pool starts another. Its pid."""
        pids = self.worker_pids()
        if not pids:
            raise UnavailableError("no stream worker is running")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the pool (workers finish their batches); kill it past the timeout."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for pid in self.worker_pids():
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            return self.process.wait(5)

    def __enter__(self) -> StreamProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

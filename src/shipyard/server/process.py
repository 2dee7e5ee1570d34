"""``shipyard serve`` as a child process: started on a free port, ready-checked, stopped."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType

from shipyard.children import Child, free_port, http_ok
from shipyard.settings import Settings


class ServerProcess:
    """A server process with ``settings``; a context manager that waits until it is ready."""

    def __init__(
        self,
        settings: Settings,
        *,
        models: tuple[str, ...] = ("fraud",),
        workers: int = 1,
        log: Path | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or settings.home / "logs" / f"server-{self.port}.log"
        self.ready_timeout_s = ready_timeout_s
        command = [sys.executable, "-m", "shipyard", "serve", "--port", str(self.port)]
        command += ["--workers", str(workers)]
        for model in models:
            command += ["--models", model]
        # Settings go by environment, so that no password shows in the process list. It
        # dies with this process: a killed demo or test run leaves no server behind.
        self.process = Child(
            command,
            env=settings.child_env(),
            log=self.log,
            die_with_parent=True,
            name="the server",
        )

    def start(self) -> ServerProcess:
        """Start the process and wait (bounded) until ``/v2/health/ready`` answers 200."""
        self.process.start(http_ok(f"{self.url}/v2/health/ready"), timeout_s=self.ready_timeout_s)
        return self

    def stop(self) -> None:
        """Terminate the process (kill it and its workers if it does not stop within 15 s)."""
        self.process.stop(15)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

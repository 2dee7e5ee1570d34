"""``shipyard serve`` as a child process: on a port the system picks, ready-checked, stopped."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import TracebackType

from shipyard.children import Child, http_ok
from shipyard.settings import Settings

#: What ``shipyard serve`` prints once it holds its port (``serving … on http://HOST:PORT``).
# (Rich may wrap a long line of models: the address is found across lines.)
ANNOUNCED = re.compile(r"^serving .*?\son\s+(http://[^\s:]+:(\d+))", re.MULTILINE | re.DOTALL)


class ServerProcess:
    """A server process with ``settings``; a context manager that waits until it is ready.

    The server binds port 0 and announces the port the system gave it, so that no other
    process can take the port between choosing and binding it; ``url`` and ``port`` are set
    once it has started.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        models: tuple[str, ...] = ("fraud",),
        workers: int = 1,
        log: Path | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.port = 0
        self.url = ""
        self.log = log or settings.home / "logs" / "server.log"
        self.ready_timeout_s = ready_timeout_s
        command = [sys.executable, "-m", "shipyard", "serve", "--port", "0"]
        command += ["--workers", str(workers)]
        for model in models:
            command += ["--models", model]
        # Settings go by environment, so that no password shows in the process list. Its own
        # session, so that stopping it also reaches workers its supervisor left behind; it
        # dies with this process: a killed demo or test run leaves no server behind.
        self.process = Child(
            command,
            env=settings.child_env(),
            log=self.log,
            new_session=True,
            die_with_parent=True,
            name="the server",
        )

    def start(self) -> ServerProcess:
        """Start the process and wait (bounded) until ``/v2/health/ready`` answers 200."""
        self.process.start(self._announced, timeout_s=self.ready_timeout_s)
        self.process.wait_ready(http_ok(f"{self.url}/v2/health/ready"), self.ready_timeout_s)
        return self

    def _announced(self) -> bool:
        """A probe: the server has announced its address (``url`` and ``port`` are set)."""
        found = ANNOUNCED.search(self.process.output())
        if found is not None:
            self.url, self.port = found[1], int(found[2])
        return found is not None

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

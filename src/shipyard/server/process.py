"""``shipyard serve`` as a child process: started on a free port, ready-checked, stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from shipyard.errors import UnavailableError


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server process over a home; a context manager that waits until it is ready."""

    def __init__(
        self,
        home: Path,
        *,
        models: tuple[str, ...] = ("fraud",),
        workers: int = 1,
        database_url: str | None = None,
        log: Path | None = None,
        ready_timeout_s: float = 90.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or home / "logs" / f"server-{self.port}.log"
        self.ready_timeout_s = ready_timeout_s
        self.command = [sys.executable, "-m", "shipyard", "--home", str(home)]
        if database_url is not None:
            self.command += ["--database-url", database_url]
        self.command += ["serve", "--port", str(self.port), "--workers", str(workers)]
        for model in models:
            self.command += ["--models", model]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        """Start the process and wait (bounded) until ``/v2/health/ready`` answers 200."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise UnavailableError(
            f"the server did not become ready: {self.log.read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        """Terminate the process (kill it if it does not stop within 15 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

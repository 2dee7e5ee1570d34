"""Child processes: started with an environment and a log, ready-checked, stopped as a tree.

Everything Shipyard starts and watches — a server, a stream pool and its workers, the
embedded nats-server — and the tests' broker servers and the benchmarks' servers and
workers run as a ``Child``::

    with Child(command, env=env, log=path).start(http_ok(url), timeout_s=60) as child:
        ...  # ready here; leaving the block stops it

``start`` polls a readiness probe (a callable answering whether the child serves yet:
``http_ok``, ``tcp_open``, ``Child.logged``) and raises ``UnavailableError`` with the end of
the log when the child exits first or the timeout passes. ``stop`` sends SIGTERM, waits
(bounded) for the child to exit, then SIGKILLs what is left of its tree — every descendant,
children before parents, and its process group when it has a session of its own — and
reaps it. Trees, pids and CPU times come from psutil; nothing here reads ``/proc`` by hand.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, NoReturn, Self

import psutil

from shipyard.errors import UnavailableError

Probe = Callable[[], bool]
"""Whether a starting child serves yet. ``OSError`` means "not yet"; its text is reported."""

POLL_S = 0.05
KILL_WAIT_S = 10.0
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------- ports


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that nobody listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            # All bound at once, so the kernel hands out distinct ports.
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nobody listens on right now."""
    return free_ports(1, host)[0]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` right now."""
    with socket.socket() as probe:
        # As servers do: connections of an earlier server in TIME_WAIT do not block it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------- probes


def http_ok(url: str, timeout_s: float = 1.0) -> Probe:
    """A probe: ``GET url`` answers 200."""
    # No proxy: a child on 127.0.0.1 is never behind the one the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def probe() -> bool:
        try:
            with opener.open(url, timeout=timeout_s) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False
        except http.client.HTTPException as error:  # something that speaks no HTTP (yet)
            raise OSError(f"{type(error).__name__}: {error}") from error

    return probe


def tcp_open(port: int, host: str = "127.0.0.1", timeout_s: float = 1.0) -> Probe:
    """A probe: something accepts TCP connections on ``host:port``."""

    def probe() -> bool:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True

    return probe


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------- processes


def pid_running(pid: int, *, named: str | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not) and, given ``named``, its command line holds it."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return named is None or any(named in part for part in process.cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process: it runs, and it may well be the one


def _gone(process: psutil.Process) -> bool:
    """Exited; a zombie counts, as only its parent can reap it."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def _tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and its live descendants, parents before their children."""
    order = [root]
    for process in order:  # grows while it is walked: breadth first
        with contextlib.suppress(psutil.Error):
            order += process.children()
    return [process for process in order if not _gone(process)]


def _group(group: int) -> list[psutil.Process]:
    """Live members of a process group, including those that left the tree (orphans)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == group and not _gone(process):
                members.append(process)
    return members


def _wait_gone(processes: Iterable[psutil.Process], deadline: float) -> None:
    waiting = list(processes)
    while waiting and time.monotonic() < deadline:
        waiting = [process for process in waiting if not _gone(process)]
        if waiting:
            time.sleep(POLL_S)


def _kill_tree(
    root: psutil.Process | None,
    known: Iterable[psutil.Process] = (),
    group: int | None = None,
    timeout_s: float = KILL_WAIT_S,
) -> None:
    """SIGKILL ``root``, its descendants, ``known`` ones (descendants seen earlier, since
    orphaned) and ``group``'s members until none is alive; children before parents, so that
    each is reaped by its parent rather than left to an init that may never reap it."""
    deadline = time.monotonic() + timeout_s
    seen = {process.pid: process for process in known}
    while True:
        family: dict[int, psutil.Process] = {}
        for top in [*([root] if root is not None else []), *seen.values()]:
            if not _gone(top):
                family.update((process.pid, process) for process in _tree(top))
        if group is not None:
            family.update((process.pid, process) for process in _group(group))
        seen.update(family)
        if not family or time.monotonic() > deadline:
            break
        for process in reversed(family.values()):
            with contextlib.suppress(psutil.Error):
                process.kill()
        time.sleep(POLL_S)
    if group is not None and family:
        # Members outlived the deadline: they keep the group's number ours, so a last
        # SIGKILL of the whole group cannot reach another's.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM a process this one did not start, wait at most ``timeout_s``, then SIGKILL it
    and its descendants; returns once they are gone (or left as zombies to their parent)."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = _tree(process)
    with contextlib.suppress(psutil.Error):
        process.terminate()
    _wait_gone([process], time.monotonic() + timeout_s)
    _kill_tree(process, family)
    _wait_gone(family, time.monotonic() + KILL_WAIT_S)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def _parent_death_signal(prctl: Callable[..., int]) -> Callable[[], None]:
    def arm() -> None:  # in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return arm


class Child:
    """One child process and whatever it starts: start, readiness, stop, kill, its log.

    ``log``: stdout and stderr are appended to it (without: they are this process's);
    ``output`` and ``logged`` see only what this start wrote. ``extra_logs``: files the
    child writes itself, shown too when it fails. ``new_session``: its own session and
    process group (Ctrl-C in a terminal does not reach it; a kill takes the whole group).
    ``die_with_parent``: on Linux, SIGTERM when the thread that started it ends — armed only
    from the main thread, the one thread that lives as long as this process. ``pipes``:
    stdin and stdout are pipes (``process.stdin``, ``process.stdout``), stderr goes to the log.
    """

    def __init__(
        self,
        command: Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        extra_logs: Sequence[Path] = (),
        new_session: bool = False,
        die_with_parent: bool = False,
        pipes: bool = False,
        name: str | None = None,
    ) -> None:
        self.command = [str(part) for part in command]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log = log
        self.extra_logs = list(extra_logs)
        self.new_session = new_session
        self.die_with_parent = die_with_parent
        self.pipes = pipes
        self.name = name or Path(self.command[0]).name
        self.returncode: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._process: psutil.Process | None = None
        self._seen: dict[int, psutil.Process] = {}  # descendants, kept for the final kill
        self._log_start = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running child's ``Popen`` (for its pipes)."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen

    @property
    def pid(self) -> int | None:
        """The child's pid (with ``new_session`` also its process group), None before start."""
        return None if self._popen is None else self._popen.pid

    @property
    def running(self) -> bool:
        """Whether the child has not exited."""
        return self.poll() is None and self._popen is not None

    def poll(self) -> int | None:
        """The exit code, or None while it runs (or before it started)."""
        if self._popen is None:
            return self.returncode
        self.returncode = self._popen.poll()
        return self.returncode

    def wait(self, timeout_s: float) -> int:
        """Wait at most ``timeout_s`` for it to exit; its exit code (``TimeoutError`` if not)."""
        try:
            self.returncode = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still runs after {timeout_s:g} s") from None
        return self.returncode

    def children(self, *, recursive: bool = True) -> list[psutil.Process]:
        """The processes it started that run now (only its own children unless ``recursive``)."""
        if self._process is None or not self.running:
            return []
        try:
            found = self._process.children(recursive=recursive)
        except psutil.Error:
            return []
        self._seen.update((process.pid, process) for process in found)
        return [process for process in found if not _gone(process)]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child and its live descendants so far."""
        if self._process is None or not self.running:
            return 0.0
        total = 0.0
        for process in _tree(self._process):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    # -- logs -------------------------------------------------------------------------------

    def output(self) -> str:
        """What the child wrote to its log since it was last started."""
        if self.log is None:
            return ""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self._log_start)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def logged(self, text: str, count: int = 1) -> Probe:
        """A probe: ``text`` appears at least ``count`` times in the log since the start."""
        return lambda: self.output().count(text) >= count

    def tail(self, lines: int = 30) -> str:
        """The last lines of each of its logs."""
        paths = [*([self.log] if self.log is not None else []), *self.extra_logs]
        return "\n".join(f"--- {path}:\n{log_tail(path, lines)}" for path in paths) or "(no log)"

    # -- life -------------------------------------------------------------------------------

    def start(self, ready: Probe | None = None, *, timeout_s: float = 60.0) -> Self:
        """Start it (unless it runs) and, given a probe, wait until the probe answers true."""
        if self.running:
            return self
        prctl = _prctl() if self.die_with_parent else None
        arm = (
            _parent_death_signal(prctl)
            if prctl is not None and threading.current_thread() is threading.main_thread()
            else None
        )
        with contextlib.ExitStack() as stack:
            output: IO[bytes] | None = None
            if self.log is not None:
                self.log.parent.mkdir(parents=True, exist_ok=True)
                output = stack.enter_context(self.log.open("ab"))
                self._log_start = self.log.stat().st_size
            self._popen = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.PIPE if self.pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.pipes else output,
                stderr=output if self.pipes or output is None else subprocess.STDOUT,
                start_new_session=self.new_session,
                preexec_fn=arm,
            )
        self.returncode = None
        self._seen = {}
        try:
            self._process = psutil.Process(self._popen.pid)
        except psutil.NoSuchProcess:  # pragma: no cover - a zombie is still found
            self._process = None
        if ready is not None:
            self.wait_ready(ready, timeout_s)
        return self

    def wait_ready(self, ready: Probe, timeout_s: float) -> None:
        """Poll ``ready`` until it answers true; if the child exits first or ``timeout_s``
        passes, kill it and raise ``UnavailableError`` with the end of its logs."""
        began = time.monotonic()
        problem = "no answer yet"
        try:
            while True:
                code = self.poll()
                if code is not None:
                    self._fail(f"exited with code {code} while starting")
                try:
                    if ready():
                        return
                except OSError as error:
                    problem = str(error) or type(error).__name__
                if time.monotonic() - began > timeout_s:
                    self._fail(f"was not ready within {timeout_s:g} s ({problem})")
                time.sleep(POLL_S)
        except BaseException:
            # A probe that raised something else, Ctrl-C: no ``with`` block has the child
            # yet, so nothing else would stop it.
            if self.running:
                self._kill(sweep_group=True)
            raise

    def _fail(self, what: str) -> NoReturn:
        self._kill(sweep_group=True)  # reaped by the poll a moment ago, if it exited
        raise UnavailableError(f"{self.name} {what}; the end of its log:\n{self.tail()}")

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the child alone (a supervisor passes it on to its own)."""
        if self.running:
            self.children()  # remembered: they may be orphaned before the final kill
            self.process.send_signal(signum)

    def stop(self, timeout_s: float = 10.0, *, signum: int | None = signal.SIGTERM) -> int | None:
        """Send ``signum`` (None: none, it was sent already), wait at most ``timeout_s`` for
        the child to exit, then kill what is left of its tree; its exit code."""
        if self._popen is None:
            return self.returncode
        reaped = self._popen.returncode is not None
        if signum is not None:
            self.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout_s)
        return self._kill(sweep_group=not reaped)

    def kill(self) -> int | None:
        """SIGKILL the child and everything it started; returns once they are gone."""
        if self._popen is None:
            return self.returncode
        return self._kill(sweep_group=self._popen.returncode is None)

    def _kill(self, *, sweep_group: bool) -> int | None:
        """Kill the tree; and the process group only while its number is surely ours: once a
        reaped child's group is empty, the system may give its number to another."""
        assert self._popen is not None
        group = self._popen.pid if self.new_session and sweep_group else None
        self.children()
        _kill_tree(self._process, self._seen.values(), group)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(KILL_WAIT_S)
        _wait_gone(self._seen.values(), time.monotonic() + KILL_WAIT_S)
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                pipe.close()
        self.returncode = self._popen.returncode
        return self.returncode

    def __enter__(self) -> Self:
        # Started already (``with Child(…).start(probe) as child``): never restarted here.
        return self.start() if self._popen is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else f"exited {self.returncode}"
        return f"<Child {self.name} {state}>"


def stop_all(children: Iterable[Child], timeout_s: float = 10.0) -> None:
    """SIGTERM every child at once (they wind down together), then stop each within the one
    deadline, killing what outlives it."""
    children = list(children)
    for child in children:
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.stop(max(0.1, deadline - time.monotonic()), signum=None)

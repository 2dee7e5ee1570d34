"""Child processes, for real: ``python -c`` children that print, serve, ignore SIGTERM and
start children of their own."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from shipyard.children import (
    Child,
    free_port,
    free_ports,
    http_ok,
    log_tail,
    pid_running,
    port_free,
    stop_all,
    stop_pid,
    tcp_open,
)
from shipyard.errors import UnavailableError

PYTHON = sys.executable
# Prints "ready" once SIGTERM is ignored, then sleeps: only SIGKILL ends it.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)
# Starts a stubborn grandchild, prints its pid, then sleeps (SIGTERM ends this one only).
PARENT = (
    "import subprocess, sys, time; "
    f"c = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], stdout=subprocess.PIPE); "
    "c.stdout.readline(); print('grandchild', c.pid, flush=True); time.sleep(600)"
)


def python(code: str) -> list[str]:
    return [PYTHON, "-c", code]


def grandchild_of(child: Child) -> int:
    line = next(x for x in child.output().splitlines() if x.startswith("grandchild"))
    return int(line.split()[1])


def gone_soon(pid: int, rounds: int = 200) -> bool:
    """Whether ``pid`` stops running within a bounded number of checks."""
    for _ in range(rounds):
        if not pid_running(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_passes_env_and_cwd_and_appends_output_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    code = "import os; print(os.environ['GREETING'], os.getcwd()); raise SystemExit(4)"
    first = Child(python(code), env={**os.environ, "GREETING": "hello"}, cwd=tmp_path, log=log)
    first.start()
    assert first.wait(60) == 4
    assert first.output() == f"hello {tmp_path}\n"
    second = Child(python("import sys; print('again', file=sys.stderr)"), log=log)
    second.start().wait(60)
    assert second.output() == "again\n"  # only what this start wrote
    assert log.read_text() == f"hello {tmp_path}\nagain\n"
    assert not second.running
    assert second.returncode == 0


def test_readiness_over_http_and_tcp(tmp_path: Path) -> None:
    port = free_port()
    command = [PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with Child(command, cwd=tmp_path, log=tmp_path / "http.log").start(
        http_ok(f"http://127.0.0.1:{port}/"), timeout_s=60
    ) as child:
        assert child.running
        assert tcp_open(port)()
    assert not child.running
    assert port_free(port)
    with pytest.raises(ConnectionRefusedError):
        tcp_open(port)()


def test_readiness_by_a_line_of_the_log(tmp_path: Path) -> None:
    with Child(python(STUBBORN), log=tmp_path / "c.log") as child:
        child.wait_ready(child.logged("ready"), timeout_s=60)
        assert child.running


def test_a_child_that_exits_while_starting_raises_with_its_log_tail(tmp_path: Path) -> None:
    code = "print('cannot open the store', flush=True); raise SystemExit(3)"
    child = Child(python(code), log=tmp_path / "c.log", name="the store")
    with pytest.raises(UnavailableError, match="the store exited with code 3") as raised:
        child.start(lambda: False, timeout_s=60)
    assert "cannot open the store" in str(raised.value)
    assert raised.value.exit_code == 6


def test_a_child_that_is_never_ready_is_killed_and_raises(tmp_path: Path) -> None:
    extra = tmp_path / "own.log"
    extra.write_text("its own log file\n")
    child = Child(python(STUBBORN), log=tmp_path / "c.log", extra_logs=[extra])

    def refused() -> bool:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(UnavailableError, match=r"not ready within 0.5 s \(connection") as raised:
        child.start(refused, timeout_s=0.5)
    assert "its own log file" in str(raised.value)
    assert not child.running
    assert child.returncode == -signal.SIGKILL


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    child = Child(python(STUBBORN), log=tmp_path / "c.log")
    child.start(child.logged("ready"), timeout_s=60)
    assert child.stop(timeout_s=0.5) == -signal.SIGKILL
    assert not child.running
    assert not pid_running(child.pid or 0)


def test_stop_takes_the_whole_tree_even_once_orphaned(tmp_path: Path) -> None:
    child = Child(python(PARENT), log=tmp_path / "c.log")
    child.start(child.logged("grandchild"), timeout_s=60)
    grandchild = grandchild_of(child)
    assert [p.pid for p in child.children()] == [grandchild]
    # SIGTERM ends the parent at once and orphans the stubborn grandchild; stop still kills it.
    assert child.stop(timeout_s=30) == -signal.SIGTERM
    assert gone_soon(grandchild)


def test_kill_of_a_session_takes_its_group(tmp_path: Path) -> None:
    child = Child(python(PARENT), log=tmp_path / "c.log", new_session=True)
    child.start(child.logged("grandchild"), timeout_s=60)
    assert os.getpgid(child.pid or 0) == child.pid
    grandchild = grandchild_of(child)
    assert os.getpgid(grandchild) == child.pid
    child.kill()
    assert gone_soon(grandchild)


def test_a_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    starter = (
        "import sys; from shipyard.children import Child; "
        "c = Child([sys.executable, '-c', 'import time; time.sleep(600)'], "
        "die_with_parent=True).start(); print('sleeper', c.pid, flush=True)"
    )
    parent = Child(python(starter), log=tmp_path / "parent.log")
    parent.start()
    assert parent.wait(60) == 0
    sleeper = int(parent.output().split()[-1])
    assert gone_soon(sleeper)


def test_stop_all_signals_every_child_first(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7)); "
        "print('ready', flush=True); time.sleep(600)"
    )
    children = [Child(python(code), log=tmp_path / f"{i}.log") for i in range(3)]
    for child in children:
        child.start(child.logged("ready"), timeout_s=60)
    stop_all(children, timeout_s=30)
    assert [child.returncode for child in children] == [7, 7, 7]


def test_stop_pid_ends_a_process_another_one_started(tmp_path: Path) -> None:
    child = Child(python(STUBBORN), log=tmp_path / "c.log")
    child.start(child.logged("ready"), timeout_s=60)
    assert child.pid is not None
    assert pid_running(child.pid, named="python")
    assert not pid_running(child.pid, named="nats-server")
    stop_pid(child.pid, timeout_s=0.5)  # as if this process had not started it
    assert child.wait(30) == -signal.SIGKILL
    assert not pid_running(child.pid)
    stop_pid(child.pid)  # gone: nothing to do


def test_cpu_seconds_count_the_child(tmp_path: Path) -> None:
    code = (
        "import time\nwhile time.process_time() < 0.3: pass\nprint('ready', flush=True)\n"
        "time.sleep(600)"
    )
    with Child(python(code), log=tmp_path / "c.log") as child:
        child.wait_ready(child.logged("ready"), timeout_s=120)
        assert child.cpu_seconds() >= 0.25  # clock ticks of 10 ms round down
    assert child.cpu_seconds() == 0.0


def test_pipes(tmp_path: Path) -> None:
    code = "import sys; print(sys.stdin.readline().upper(), end='', flush=True)"
    with Child(python(code), log=tmp_path / "c.log", pipes=True) as child:
        assert child.process.stdin is not None
        assert child.process.stdout is not None
        child.process.stdin.write(b"go\n")
        child.process.stdin.flush()
        assert child.process.stdout.readline() == b"GO\n"
        assert child.wait(60) == 0


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(port_free(port) for port in ports)


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, 2) == "line 98\nline 99"
    assert "missing" in log_tail(tmp_path / "none.log")


def test_a_child_that_was_never_started() -> None:
    child = Child(["true"])
    assert child.pid is None
    assert not child.running
    assert child.children() == []
    assert child.stop() is None
    with pytest.raises(RuntimeError, match="was not started"):
        child.wait(1)


def test_pid_running_sees_zombies_as_gone(tmp_path: Path) -> None:
    child = Child(python("pass"), log=tmp_path / "c.log").start()
    pid = child.pid
    assert pid is not None
    for _ in range(200):  # bounded: until it has exited, unreaped
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    assert not pid_running(pid)
    assert child.wait(30) == 0


def test_a_probe_that_fails_otherwise_than_not_yet_leaves_no_child(tmp_path: Path) -> None:
    """A probe raising what is not "not ready yet" (or Ctrl-C) stops the start, and with it
    the child: no ``with`` block holds it yet."""
    child = Child(python(STUBBORN), log=tmp_path / "stubborn.log")

    def broken() -> bool:
        raise KeyError("the probe itself is wrong")

    with pytest.raises(KeyError):
        child.start(broken, timeout_s=60)
    assert not child.running
    assert child.returncode == -signal.SIGKILL


def test_http_ok_on_a_port_that_speaks_no_http_is_not_ready(tmp_path: Path) -> None:
    port = free_port()
    garbage = (
        f"import socket; s = socket.create_server(('127.0.0.1', {port})); print('up', flush=True)\n"
        "while True:\n    c, _ = s.accept(); c.sendall(b'NOT HTTP\\r\\n\\r\\n'); c.close()"
    )
    with Child(python(garbage), log=tmp_path / "garbage.log") as server:
        server.wait_ready(server.logged("up"), timeout_s=60)
        probe = http_ok(f"http://127.0.0.1:{port}/")
        with pytest.raises(OSError, match="BadStatusLine"):
            probe()

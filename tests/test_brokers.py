"""The private broker servers of ``tests/brokers.py``: they start, stop and restart, and what
they acknowledged survives a clean restart and a kill. Where a server binary is missing the
tests skip and say what to install; in CI they fail."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import anyio
import psutil
import pytest

from brokers import (
    BrokerProcess,
    NatsProcess,
    RabbitMQProcess,
    RedisProcess,
    ServerNotInstalledError,
    create_server,
)
from shipyard.errors import UnavailableError
from shipyard.messaging import QueueSpec, open_broker

pytestmark = pytest.mark.integration
BODIES = [f"message {i}".encode() for i in range(5)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQProcess]:
    """One node for the module: each RabbitMQ start costs seconds."""
    with create_server(RabbitMQProcess, tmp_path_factory.mktemp("rabbitmq")) as server:
        yield server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    with create_server(RedisProcess, tmp_path / "redis") as server:
        yield server


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsProcess]:
    with create_server(NatsProcess, tmp_path / "nats") as server:
        yield server


@pytest.fixture(
    params=["redis_server", "nats_server", "rabbitmq"], ids=["redis", "nats", "rabbitmq"]
)
def server(request: pytest.FixtureRequest) -> BrokerProcess:
    """Each kind of server, running."""
    running: BrokerProcess = request.getfixturevalue(request.param)
    return running


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def publish(url: str, queue: str, bodies: list[bytes]) -> None:
    """Declare the queue and publish, returning once the server confirmed every message."""
    broker = open_broker(url)
    try:
        await broker.declare(QueueSpec(queue))
        await broker.publish(queue, bodies)
    finally:
        await broker.close()


async def consume(url: str, queue: str, expected: int) -> list[bytes]:
    """Consume and ack until ``expected`` messages arrived or 30 seconds passed."""
    bodies: list[bytes] = []
    broker = open_broker(url)
    try:
        with anyio.move_on_after(30):
            while len(bodies) < expected:
                deliveries = await broker.consume(queue, 100, 200)
                bodies += [delivery.body for delivery in deliveries]
                await broker.ack(queue, deliveries)
    finally:
        await broker.close()
    return bodies


def refused(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def live_processes_of(node: str) -> list[int]:
    """Pids of live processes started for the RabbitMQ ``node`` (their environment names it)."""
    found = []
    for process in psutil.process_iter():
        with suppress(psutil.Error):
            environment = process.environ()  # empty for a zombie
            if environment.get("RABBITMQ_NODENAME") == node:
                found.append(process.pid)
    return found


@pytest.mark.anyio
async def test_restart_keeps_acknowledged_messages(server: BrokerProcess, queue: str) -> None:
    url = server.url
    await publish(url, queue, BODIES)
    server.restart()
    assert server.url == url
    assert await consume(url, queue, len(BODIES)) == BODIES


@pytest.mark.anyio
async def test_kill_then_start_keeps_acknowledged_messages(
    server: BrokerProcess, queue: str
) -> None:
    await publish(server.url, queue, BODIES)
    await anyio.sleep(server.queue_settle_seconds)
    node = server.node if isinstance(server, RabbitMQProcess) else None
    assert node is None or live_processes_of(node)
    server.kill()
    assert refused(server.port)
    # No beam.smp, nor the helpers Erlang runs in sessions of their own, outlives a kill.
    assert node is None or live_processes_of(node) == []
    server.start()
    assert await consume(server.url, queue, len(BODIES)) == BODIES


@pytest.mark.anyio
async def test_rabbitmq_node_is_private_and_makes_quorum_queues(
    rabbitmq: RabbitMQProcess, queue: str
) -> None:
    await publish(rabbitmq.url, queue, BODIES[:1])
    assert rabbitmq.node != "rabbit@localhost"
    # The message count is left out: RabbitMQ refreshes it only every few seconds.
    listed = rabbitmq.rabbitmqctl("list_queues", "--quiet", "name", "type")
    assert f"{queue}\tquorum" in listed.splitlines()


def test_leaving_the_with_block_stops_the_server(tmp_path: Path) -> None:
    with create_server(RedisProcess, tmp_path / "redis") as server:
        assert server.running
        assert not refused(server.port)
    assert not server.running
    assert refused(server.port)


def test_a_server_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    server = create_server(RedisProcess, tmp_path / "redis")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        with pytest.raises(UnavailableError, match="exited with code") as raised:
            server.start()
    assert "Address already in use" in str(raised.value)
    assert not server.running


def test_a_missing_server_says_what_to_install(tmp_path: Path) -> None:
    class Uninstalled(RedisProcess):
        binary = "shipyard-no-such-server"

    with pytest.raises(ServerNotInstalledError, match="install it with: apt-get install redis"):
        Uninstalled(tmp_path)

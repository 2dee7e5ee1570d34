"""The contract every ``Broker`` backend passes (DESIGN rule 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from shipyard.messaging import BackpressureError, Broker, QueueSpec

pytestmark = pytest.mark.anyio
Make = Callable[..., Broker]
# Longer than any test: no delivery comes back on its own while the test looks.
NO_REDELIVERY_MS = 600_000


async def drain(broker: Broker, queue: str, expected: int, rounds: int = 50) -> list[bytes]:
    """Consume and ack until ``expected`` messages arrived or the rounds run out."""
    bodies: list[bytes] = []
    for _ in range(rounds):
        if len(bodies) >= expected:
            break
        deliveries = await broker.consume(queue, 100, 100)
        bodies += [d.body for d in deliveries]
        await broker.ack(queue, deliveries)
    return bodies


async def test_publish_then_consume_in_order(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.declare(QueueSpec(queue))  # idempotent
    await broker.publish(queue, [b"1", b"2", b"3"])
    deliveries = await broker.consume(queue, 10, 1000)
    assert [d.body for d in deliveries] == [b"1", b"2", b"3"]
    assert all(d.attempts == 1 for d in deliveries)
    await broker.ack(queue, deliveries)


async def test_consume_returns_empty_after_timeout(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    assert await broker.consume(queue, 10, 50) == []


async def test_max_messages_is_respected(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [str(i).encode() for i in range(10)])
    first = await broker.consume(queue, 4, 1000)
    assert len(first) == 4
    await broker.ack(queue, first)
    assert len(await drain(broker, queue, 6)) == 6


async def test_acked_messages_never_come_back(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"x"])
    await broker.ack(queue, await broker.consume(queue, 1, 1000))
    await asyncio.sleep(0.5)  # longer than the redelivery delay
    assert await broker.consume(queue, 10, 200) == []


async def test_unacked_message_of_a_closed_consumer_is_redelivered(
    brokers: Make, queue: str
) -> None:
    crashed, survivor = brokers(), brokers()
    await crashed.declare(QueueSpec(queue))
    await crashed.publish(queue, [b"work"])
    taken = await crashed.consume(queue, 1, 1000)
    assert [d.body for d in taken] == [b"work"]
    await crashed.close()  # dies without acking
    again = []
    for _ in range(30):  # bounded: redelivery takes the backend's delay
        again = await survivor.consume(queue, 1, 200)
        if again:
            break
    assert [d.body for d in again] == [b"work"]
    assert again[0].attempts == 2
    await survivor.ack(queue, again)


async def test_reject_dead_letters_with_reason_and_original_body(brokers: Make, queue: str) -> None:
    broker = brokers()
    spec = QueueSpec(queue)
    await broker.declare(spec)
    await broker.publish(queue, [b'{"id": "t1", "V1": "oops"}', b"\xff\xfe"])
    deliveries = await broker.consume(queue, 2, 1000)
    for delivery in deliveries:
        await broker.reject(queue, delivery, "V1 is not a number")
    dead = await drain(broker, spec.dead_letter_name, 2)
    records = [orjson.loads(body) for body in dead]
    assert [r["reason"] for r in records] == ["V1 is not a number"] * 2
    assert records[0]["body"] == '{"id": "t1", "V1": "oops"}'
    assert records[0]["attempts"] == 1
    assert records[0]["queue"] == queue
    assert records[1]["body_base64"] == "//4="
    await asyncio.sleep(0.5)
    assert await broker.consume(queue, 10, 200) == []


async def test_competing_consumers_share_the_work(brokers: Make, queue: str) -> None:
    # Without redelivery: on a busy machine the 300 ms could pass between the two consumes,
    # and the second would rightly be given the first's unacked messages again.
    first, second = brokers(NO_REDELIVERY_MS), brokers(NO_REDELIVERY_MS)
    await first.declare(QueueSpec(queue))
    await first.publish(queue, [str(i).encode() for i in range(200)])
    got_first = await first.consume(queue, 120, 1000)
    got_second = await second.consume(queue, 200, 1000)
    assert {d.body for d in got_first}.isdisjoint({d.body for d in got_second})
    await first.ack(queue, got_first)
    await second.ack(queue, got_second)
    rest = await drain(first, queue, 200 - len(got_first) - len(got_second))
    assert len(got_first) + len(got_second) + len(rest) == 200


async def test_a_full_queue_refuses_publishes_without_losing_any(brokers: Make, queue: str) -> None:
    """Bounded queues refuse publishes near their bound (quorum queues check it a message
    late, so the bound is approximate) and keep every message they accepted."""
    broker = brokers()
    await broker.declare(QueueSpec(queue, max_length=5))
    accepted: list[bytes] = []
    refusal, refused = "", ()
    for i in range(15):
        body = str(i).encode()
        try:
            await broker.publish(queue, [body])
        except BackpressureError as error:
            refusal, refused = str(error), error.refused
            break
        accepted.append(body)
        await asyncio.sleep(0.05)  # let the broker see its own length
    assert "full" in refusal, "a bounded queue never refused a publish"
    assert refused == (0,)  # which of the batch to publish again
    assert 5 <= len(accepted) <= 7
    assert await drain(broker, queue, len(accepted)) == accepted
    await broker.publish(queue, [b"after"])
    assert await drain(broker, queue, 1) == [b"after"]


async def test_empty_publish_is_a_no_op(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [])
    assert await broker.consume(queue, 10, 50) == []


async def test_published_at_is_recorded(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    await broker.publish(queue, [b"t"])
    (delivery,) = await broker.consume(queue, 1, 1000)
    assert delivery.published_at is not None
    assert delivery.published_at > 1.7e9
    await broker.ack(queue, [delivery])


async def test_attempts_count_every_delivery_to_a_consumer_that_died(
    brokers: Make, queue: str
) -> None:
    """The scorer's delivery bound relies on this count being exact on every backend."""
    setup = brokers()
    await setup.declare(QueueSpec(queue))
    await setup.publish(queue, [b"poison"])
    seen: list[int] = []
    for _ in range(40):  # bounded: each redelivery takes the backend's delay
        consumer = brokers()
        taken = await consumer.consume(queue, 10, 200)
        seen += [d.attempts for d in taken]
        await consumer.close()  # dies holding the message
        if len(seen) == 3:
            break
    assert seen == [1, 2, 3]


async def test_backlog_counts_messages_no_consumer_took(brokers: Make, queue: str) -> None:
    broker = brokers()
    await broker.declare(QueueSpec(queue))
    assert await broker.backlog(queue) == 0
    await broker.publish(queue, [b"1", b"2", b"3"])
    backlog = None
    for _ in range(20):  # RabbitMQ counts a moment after the confirm
        backlog = await broker.backlog(queue)
        if backlog == 3:
            break
        await asyncio.sleep(0.05)
    assert backlog == 3
    taken = await broker.consume(queue, 1, 1000)
    await broker.ack(queue, taken)
    for _ in range(20):
        backlog = await broker.backlog(queue)
        if backlog is not None and backlog <= 2:
            break
        await asyncio.sleep(0.05)
    # A prefetching consumer holds messages it has not returned yet: at most the rest.
    assert backlog is not None
    assert backlog <= 2

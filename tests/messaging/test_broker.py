import asyncio

import orjson
import pytest

from shipyard.errors import ConfigurationError
from shipyard.messaging import (
    BackpressureError,
    Delivery,
    QueueSpec,
    dead_letter_body,
    open_broker,
    publish_patiently,
)


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"memory://.*amqp://.*nats://.*redis://"):
        open_broker("kafka://127.0.0.1:9092")


def test_dead_letter_queue_defaults_to_dot_dead() -> None:
    assert QueueSpec("transactions").dead_letter_name == "transactions.dead"
    assert QueueSpec("transactions", dead_letter="bad").dead_letter_name == "bad"


def test_dead_letter_body_keeps_the_original_and_the_reason() -> None:
    record = orjson.loads(dead_letter_body("q", Delivery(b'{"id": "1"}', 3, None), "not JSON"))
    assert record["body"] == '{"id": "1"}'
    assert record["reason"] == "not JSON"
    assert record["attempts"] == 3
    assert record["queue"] == "q"


@pytest.mark.anyio
async def test_publish_patiently_waits_for_room_and_loses_nothing() -> None:
    url = "memory://patient"
    producer, consumer = open_broker(url), open_broker(url)
    await producer.declare(QueueSpec("q", max_length=3))
    bodies = [str(i).encode() for i in range(6)]
    await publish_patiently(producer, "q", bodies[:3])  # fills the queue
    waits: list[str] = []
    second = asyncio.ensure_future(
        publish_patiently(
            producer, "q", bodies[3:], waiting=lambda e: waits.append(type(e).__name__)
        )
    )
    await asyncio.sleep(0.05)  # it meets a full queue and backs off
    assert waits
    received: list[bytes] = []
    for _ in range(200):  # bounded: drain while the producer waits for room
        deliveries = await consumer.consume("q", 1, 20)
        received += [d.body for d in deliveries]
        await consumer.ack("q", deliveries)
        if len(received) == 6:
            break
    await second
    assert received == bodies
    assert set(waits) == {"BackpressureError"}


@pytest.mark.anyio
async def test_publish_patiently_raises_once_told_to_give_up() -> None:
    broker = open_broker("memory://impatient")
    await broker.declare(QueueSpec("q", max_length=1))
    with pytest.raises(BackpressureError, match="full"):
        await publish_patiently(broker, "q", [b"1", b"2"], give_up=lambda: True)

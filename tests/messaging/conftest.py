"""The backends every contract test runs on: in-process memory, and the real brokers on
127.0.0.1 (Redis 6379, RabbitMQ 5672, NATS 4222). In CI an unreachable broker fails the
run; elsewhere its tests skip and say how to start it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import nats
import pytest
import redis.asyncio
from nats.js.errors import NotFoundError

from shipyard.messaging import Broker, open_broker
from shipyard.messaging.nats import stream_name

REDELIVERY_MS = 300
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
BACKENDS = {
    "memory": lambda: f"memory://contract-{uuid.uuid4().hex}",
    "nats": lambda: NATS_URL,
    "redis": lambda: REDIS_URL,
    "rabbitmq": lambda: AMQP_URL,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


PORTS = {"redis": ("Redis", 6379), "rabbitmq": ("RabbitMQ", 5672), "nats": ("NATS", 4222)}


@pytest.fixture(params=sorted(BACKENDS))
def broker_url(request: pytest.FixtureRequest, service: Callable[[str, int], None]) -> str:
    """One URL per backend; memory gets a namespace of its own per test."""
    if request.param in PORTS:
        request.applymarker(pytest.mark.integration)
        service(*PORTS[request.param])
    url: str = BACKENDS[request.param]()
    return url


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def _delete_rabbitmq_queues(url: str, names: list[str]) -> None:
    connection = await aio_pika.connect_robust(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name, if_unused=False, if_empty=False)


async def delete_nats_streams(url: str, names: list[str]) -> None:
    """Delete the queues' streams (and so their consumers) from a NATS server."""
    client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        for name in names:
            with contextlib.suppress(NotFoundError):
                await client.jetstream().delete_stream(stream_name(name))
    finally:
        await client.close()


@pytest.fixture
async def brokers(broker_url: str, queue: str) -> AsyncIterator[Callable[[], Broker]]:
    """Make brokers (connections) on the backend; all are closed after the test, and the
    test's queues are deleted from servers that keep them."""
    opened: list[Broker] = []

    def make() -> Broker:
        broker = open_broker(broker_url, redelivery_ms=REDELIVERY_MS)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.close()
    if broker_url.startswith("amqp"):
        await _delete_rabbitmq_queues(broker_url, [queue, f"{queue}.dead"])
    if broker_url.startswith("redis"):
        client = redis.asyncio.Redis.from_url(broker_url)
        names = [queue, f"{queue}.dead"]
        await client.delete(*names, *(f"shipyard:queue:{name}" for name in names))
        await client.aclose()
    if broker_url.startswith("nats"):
        await delete_nats_streams(broker_url, [queue, f"{queue}.dead"])

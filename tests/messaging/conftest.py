"""The backends every contract test runs on: in-process memory, and the real brokers on
127.0.0.1 (Redis 6379, RabbitMQ 5672, NATS 4222). In CI an unreachable broker fails the
run; elsewhere its tests skip and say how to start it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from brokers import SHARED, delete_queues
from shipyard.messaging import Broker, open_broker

REDELIVERY_MS = 300
REDIS_URL = SHARED["redis"][2]
AMQP_URL = SHARED["rabbitmq"][2]
NATS_URL = SHARED["nats"][2]
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


@pytest.fixture
async def brokers(broker_url: str, queue: str) -> AsyncIterator[Callable[..., Broker]]:
    """Make brokers (connections) on the backend, redelivering after 300 ms unless told
    otherwise; all are closed after the test, and the test's queues are deleted from
    servers that keep them."""
    opened: list[Broker] = []

    def make(redelivery_ms: float = REDELIVERY_MS) -> Broker:
        broker = open_broker(broker_url, redelivery_ms=redelivery_ms)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        await broker.close()
    await delete_queues(broker_url, [queue])

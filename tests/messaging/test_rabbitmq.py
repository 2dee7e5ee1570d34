"""What the contract cannot see of the RabbitMQ backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from shipyard.errors import UnavailableError
from shipyard.messaging import QueueSpec, open_broker

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_unreachable_server_is_unavailable_without_the_password() -> None:
    broker = open_broker("amqp://shipyard:s3cret@127.0.0.1:1/")
    with pytest.raises(UnavailableError, match="cannot reach RabbitMQ") as raised:
        await broker.declare(QueueSpec("x"))
    assert "s3cret" not in str(raised.value)
    await broker.close()


@pytest.mark.integration
async def test_queues_are_durable_quorum_queues_with_a_dead_letter_target(
    service: Callable[[str, int], None],
) -> None:
    service("RabbitMQ", 5672)
    import aio_pika

    name = f"test-{uuid.uuid4().hex[:12]}"
    broker = open_broker("amqp://guest:guest@127.0.0.1:5672/")
    await broker.declare(QueueSpec(name, max_length=100))
    await broker.close()
    connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
    async with connection:
        channel = await connection.channel()
        # Re-declaring with other arguments would fail: this proves what was declared.
        await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}.dead",
                "x-max-length": 100,
                "x-overflow": "reject-publish",
            },
        )
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue, if_unused=False, if_empty=False)

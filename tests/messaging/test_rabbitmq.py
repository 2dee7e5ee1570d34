"""What the contract cannot see of the RabbitMQ backend."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import aiormq
import pamqp.frame
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader

from shipyard.errors import UnavailableError
from shipyard.messaging import BackpressureError, Broker, Delivery, QueueSpec, open_broker
from shipyard.messaging.rabbitmq import FRAME_END, PERSISTENT, PUBLISHED_AT

AMQP = "amqp://guest:guest@127.0.0.1:5672/"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _upgrade_hint(missing: list[str]) -> str:
    version = importlib.metadata.version("aiormq")
    return (
        f"aiormq {version} lacks what messaging/rabbitmq.py relies on:\n  "
        + "\n  ".join(missing)
        + "\nadapt RabbitMQBroker._send and _settle to it, or keep aiormq at the range "
        "pyproject.toml gives"
    )


def test_aiormq_channels_have_the_private_methods_the_publisher_replaces() -> None:
    """The publisher settles confirms itself; after an upgrade, say what is gone."""
    channel = aiormq.Channel
    missing = []
    if not callable(getattr(channel, "_confirm_delivery", None)):
        missing.append("Channel._confirm_delivery(delivery_tag, frame): settles one confirm")
    else:
        parameters = list(inspect.signature(channel._confirm_delivery).parameters)
        if parameters != ["self", "delivery_tag", "frame"]:
            missing.append(f"Channel._confirm_delivery(delivery_tag, frame), not {parameters}")
    if not inspect.iscoroutinefunction(getattr(channel, "_on_confirm_frame", None)):
        missing.append("async Channel._on_confirm_frame(frame): replaced per channel")
    elif "self._on_confirm_frame(" not in inspect.getsource(channel._reader):
        missing.append("Channel._reader calling self._on_confirm_frame (the replacement)")
    if "message_id_delivery_tag" not in inspect.getsource(channel._on_return_frame):
        missing.append("Channel._on_return_frame finding a publish by message_id_delivery_tag")
    if not {"payload", "should_close"} <= set(inspect.signature(ChannelFrame).parameters):
        missing.append("aiormq.abc.ChannelFrame(payload=, should_close=): the batch's write")
    assert not missing, _upgrade_hint(missing)


def test_pamqp_content_headers_have_the_layout_the_publisher_patches() -> None:
    """The publisher encodes one content header and patches body size and message id."""
    message_id = "0" * 16
    properties = spec.Basic.Properties(
        delivery_mode=PERSISTENT, headers={PUBLISHED_AT: time.time()}, message_id=message_id
    )
    frame = pamqp.frame.marshal(ContentHeader(0, 0, properties), 7)
    assert frame[0] == 2, "frame type 2 (content header) first"
    assert int.from_bytes(frame[1:3], "big") == 7, "then the channel number"
    assert frame[11:19] == bytes(8), "the body size at bytes 11-18"
    assert frame.endswith(message_id.encode() + FRAME_END), "the message id last"


@pytest.mark.integration
async def test_aiormq_channels_have_the_state_the_publisher_writes(
    service: Callable[[str, int], None],
) -> None:
    """What ``RabbitMQBroker._send`` reads and writes on a live publishing channel."""
    service("RabbitMQ", 5672)
    connection = await aiormq.connect(AMQP)
    try:
        channel = await connection.channel(publisher_confirms=True)
        expected = {
            "confirmations": dict,
            "message_id_delivery_tag": dict,
            "delivery_tag": int,
            "number": int,
            "max_content_size": int,
            "publisher_confirms": bool,
        }
        missing = [
            f"Channel.{name}: {kind.__name__}"
            for name, kind in expected.items()
            if not isinstance(getattr(channel, name, None), kind)
        ]
        if not callable(getattr(getattr(channel, "write_queue", None), "put", None)):
            missing.append("Channel.write_queue: a queue of frames to write")
        if not callable(getattr(channel, "create_future", None)):
            missing.append("Channel.create_future()")
        try:
            async with channel.lock:
                pass
        except (AttributeError, TypeError):
            missing.append("Channel.lock: an async context manager")
        assert not missing, _upgrade_hint(missing)
    finally:
        await connection.close()


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


@pytest.fixture
async def rabbit(service: Callable[[str, int], None]) -> AsyncIterator[tuple[str, list[Broker]]]:
    """A fresh queue name and a list to put brokers in; both cleaned up after."""
    service("RabbitMQ", 5672)
    name = f"test-{uuid.uuid4().hex[:12]}"
    opened: list[Broker] = []
    yield name, opened
    for broker in opened:
        await broker.close()
    await _delete(name, f"{name}.dead")


async def _delete(*names: str) -> None:
    connection = await aio_pika.connect_robust(AMQP)
    async with connection:
        channel = await connection.channel()
        for queue in names:
            await channel.queue_delete(queue, if_unused=False, if_empty=False)


@pytest.mark.integration
async def test_a_later_declaration_with_other_arguments_keeps_the_queue(
    rabbit: tuple[str, list[Broker]],
) -> None:
    name, opened = rabbit
    first, second = open_broker(AMQP), open_broker(AMQP)
    opened += [first, second]
    await first.declare(QueueSpec(name, max_length=2))
    await second.declare(QueueSpec(name))  # no error: first declaration wins
    accepted, refused = 0, False
    for _ in range(6):  # quorum queues check the bound a message late
        try:
            await second.publish(name, [b"x"])
        except BackpressureError:
            refused = True
            break
        accepted += 1
        await asyncio.sleep(0.05)
    assert refused, "the first declaration's bound does not hold"
    assert 2 <= accepted <= 3


@pytest.mark.integration
async def test_acks_never_cover_a_delivery_still_in_flight(
    rabbit: tuple[str, list[Broker]],
) -> None:
    name, opened = rabbit
    consumer = open_broker(AMQP)
    opened.append(consumer)
    await consumer.declare(QueueSpec(name))
    await consumer.publish(name, [str(i).encode() for i in range(10)])
    earlier = await _take(consumer, name, 5)
    later = await _take(consumer, name, 5)
    await consumer.ack(name, later)  # the earlier batch is still being worked on
    await consumer.close()  # the worker dies
    survivor = open_broker(AMQP)
    opened.append(survivor)
    again = await _take(survivor, name, 10)
    # Acking the later batch must not have acked the earlier one with `multiple`.
    assert {d.body for d in earlier} <= {d.body for d in again}
    await survivor.ack(name, again[5:])
    await survivor.ack(name, again[:5])  # now the prefix is done: everything is acked
    await survivor.close()
    last = open_broker(AMQP)
    opened.append(last)
    assert await last.consume(name, 10, 300) == []


async def _take(broker: Broker, queue: str, count: int) -> list[Delivery]:
    taken: list[Delivery] = []
    for _ in range(50):  # bounded
        taken += await broker.consume(queue, count - len(taken), 200)
        if len(taken) == count:
            break
    return taken

"""``amqp://`` — RabbitMQ through aio-pika (connections, declarations) and aiormq's channels
underneath it (the data path).

Queues are durable quorum queues (they count deliveries, so ``attempts`` is exact) with
``x-overflow: reject-publish`` and ``x-max-length`` when bounded: the broker nacks a publish
to a full queue (and returns one to a missing queue: publishes are mandatory) and
``publish`` raises ``BackpressureError`` naming those. A quorum queue notices its bound
late, so a batch on its way in when the queue fills is stored whole: publishes to a
queue declared bounded here go one batch at a time. Publishing uses publisher confirms,
the whole batch written at once: its frames are encoded from one header template (the
body size and a message id patched in) into one write on aiormq's channel, and each
message's confirm is counted into the batch, not awaited as a future of its own —
aio-pika spent ~150 µs of Python per published message, this ~5.

Consuming is a push consumer on aiormq's channel with a per-connection prefetch feeding a
local buffer, so ``consume`` costs no round trip (aio-pika's consumer added ~40 µs per
message: an ``IncomingMessage`` and a second task each); a batch short of
``max_messages`` waits up to 5 ms (within ``timeout_ms``) for the rest of a burst. Acks
use ``multiple``: one ``basic.ack`` covers every delivery up to the highest tag below
which all are done — never one still in flight in another batch. A dead letter is
published (confirmed) to ``<queue>.dead`` before the original is acked; the queue also
names that queue as its dead-letter target for messages the broker itself drops.

The connection is robust: after the server comes back, aio-pika reconnects (every
second) and reopens the channels; the next ``consume`` starts its consumer again on the
reopened channel. Deliveries taken before the outage are then void — the server
redelivers them — so ``consume`` drops the ones still buffered and ``ack`` of the others
raises ``UnavailableError``; so does every operation while the connection is down. A
closed connection's unacked deliveries return to the queue at once. Declarations are
first-one-wins, as on the other backends: a queue that exists with other arguments is
used as it is.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

import aio_pika
import aiormq
import pamqp.frame
from aio_pika.abc import (
    AbstractChannel,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from aiormq.abc import ChannelFrame, ConfirmationFrameType, DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from shipyard.errors import BackpressureError, InvalidInputError, UnavailableError
from shipyard.messaging.backends import shown_url
from shipyard.messaging.broker import (
    Delivery,
    QueueSpec,
    dead_letter_body,
)

logger = logging.getLogger(__name__)

PUBLISHED_AT = "shipyard-published-at"
RECONNECTING_S = 0.25  # how long an operation waits for a channel that is being reopened
GATHER_S = 0.005  # how long a consume that found some messages waits for more
PERSISTENT = 2
FRAME_END = b"\xce"
_BODY_FRAME = struct.Struct(">BHI")  # frame type 3 (body), channel, payload size
_ID_DIGITS = 16  # message ids: the delivery tag in hex, so a return finds its publish


class _Subscription:
    """One queue's consumer: the channel it consumes on and what arrived, not yet taken."""

    def __init__(self) -> None:
        self.channel: aiormq.abc.AbstractChannel | None = None
        self.buffer: deque[DeliveredMessage] = deque()
        self.arrived = asyncio.Event()
        self.lock = asyncio.Lock()


class _Batch:
    """The publisher confirms of one published batch: aiormq settles each message's
    ``_Confirm`` as it would a future; ``settled`` resolves when all are."""

    def __init__(self, settled: asyncio.Future[None], size: int) -> None:
        self.settled = settled
        self.waiting = size
        self.refused: list[int] = []


class _Confirm:
    """One message's confirm, as aiormq's channel reads and settles it."""

    __slots__ = ("_done", "batch", "position")

    def __init__(self, batch: _Batch, position: int) -> None:
        self.batch = batch
        self.position = position
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, result: object) -> None:
        # Basic.Ack: stored. A returned message (no queue took it) comes as its content.
        self._settle(refused=not isinstance(result, spec.Basic.Ack))

    def set_exception(self, error: BaseException) -> None:
        self._settle(refused=True)  # Basic.Nack: the queue is full; or returned

    def _settle(self, *, refused: bool) -> None:
        if self._done:
            return
        self._done = True
        batch = self.batch
        if refused:
            batch.refused.append(self.position)
        batch.waiting -= 1
        if batch.waiting == 0 and not batch.settled.done():
            batch.settled.set_result(None)


class _Acks:
    """Deliveries of one channel in tag order, so that acks can be sent with ``multiple``."""

    def __init__(self) -> None:
        self.outstanding: deque[DeliveredMessage] = deque()
        self.done: set[int] = set()

    def finish(self, tags: Sequence[int]) -> DeliveredMessage | None:
        """Mark deliveries done; the message whose ``multiple`` ack covers every finished
        delivery below the first unfinished one, if there is such a prefix."""
        self.done.update(tags)
        last = None
        while self.outstanding and self.outstanding[0].delivery_tag in self.done:
            last = self.outstanding.popleft()
            self.done.discard(last.delivery_tag or 0)
        return last


class RabbitMQBroker:
    """Quorum queues, publisher confirms, prefetching consumers, explicit dead letters."""

    def __init__(self, url: str, *, redelivery_ms: float = 30_000, prefetch: int = 8192) -> None:
        self._url = url
        self._shown = shown_url(url)
        self._prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer: AbstractChannel | None = None
        self._side: AbstractRobustChannel | None = None
        self._consumers: dict[str, _Subscription] = {}
        self._bounded: dict[str, asyncio.Lock] = {}  # one publish at a time to a bounded queue
        self._acks: dict[aiormq.abc.AbstractChannel, _Acks] = {}
        self._lock = asyncio.Lock()
        self._specs: dict[str, QueueSpec] = {}  # declared here; others use <queue>.dead

    async def _channels(self) -> tuple[AbstractChannel, AbstractChannel]:
        async with self._lock:
            if self._publisher is None or self._consumer is None:
                try:
                    self._connection = await aio_pika.connect_robust(
                        self._url, timeout=5, reconnect_interval=1
                    )
                    self._publisher = await self._connection.channel(publisher_confirms=True)
                    self._consumer = await self._connection.channel()
                    await self._consumer.set_qos(prefetch_count=self._prefetch)
                except (AMQPError, OSError, TimeoutError) as error:
                    raise UnavailableError(
                        f"cannot reach RabbitMQ at {self._shown}: {error or type(error).__name__}; "
                        "check the URL and that rabbitmq-server runs"
                    ) from error
            return self._publisher, self._consumer

    async def declare(self, spec: QueueSpec) -> None:
        """Durable quorum queues for the queue and its dead letters (idempotent; a queue
        that exists with other arguments is kept as it is)."""
        dead = spec.dead_letter_name
        await self._declare(dead, {"x-queue-type": "quorum"})
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        }
        if spec.max_length is not None:
            arguments |= {"x-max-length": spec.max_length, "x-overflow": "reject-publish"}
        await self._declare(spec.name, arguments)
        self._specs[spec.name] = spec

    async def _declare(self, name: str, arguments: dict[str, Any]) -> None:
        channel = await self._side_channel()
        try:
            # Not robust: durable queues outlive a server restart; and a robust channel would
            # answer later passive declares (``backlog``) from its cache.
            await channel.declare_queue(name, durable=True, arguments=arguments, robust=False)
        except ChannelPreconditionFailed as error:
            # The server closed the side channel; the queue exists as someone declared it.
            logger.info("queue %r exists with other arguments; using it as it is (%s)", name, error)
            self._side = None
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            raise self._lost(error) from error

    async def _side_channel(self) -> AbstractRobustChannel:
        """A channel for declarations and counts: the server closes a channel whose
        declaration fails, and that must not be the publishing or consuming one."""
        await self._channels()
        assert self._connection is not None
        if self._side is None or self._side.is_closed:
            try:
                self._side = await self._connection.channel()
            except (AMQPError, ConnectionError, RuntimeError) as error:
                # aio-pika raises RuntimeError("Connection was not opened") while the robust
                # connection is down and reconnecting.
                raise self._lost(error) from error
        return self._side

    def _lost(self, error: BaseException) -> UnavailableError:
        return UnavailableError(
            f"lost the connection to RabbitMQ at {self._shown} "
            f"({error or type(error).__name__}); reconnecting, retry later"
        )

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Publish the batch in one write with every confirm in flight at once; wait for all."""
        if not bodies:
            return
        publisher, _ = await self._channels()
        try:
            if publisher.is_closed:
                raise ChannelInvalidStateError("the publishing channel is closed")
            channel = await publisher.get_underlay_channel()
            spec_ = self._specs.get(queue)
            if spec_ is None or spec_.max_length is None:
                refused = await self._send(channel, queue, bodies)
            else:  # the bound is checked late: let at most one batch overshoot it
                async with self._bounded.setdefault(queue, asyncio.Lock()):
                    refused = await self._send(channel, queue, bodies)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            raise UnavailableError(
                f"publishing to RabbitMQ at {self._shown} failed "
                f"({error or type(error).__name__}); publish the batch again later"
            ) from error
        if refused:
            raise BackpressureError(
                f"queue {queue!r} is full or missing: RabbitMQ refused {len(refused)} of "
                f"{len(bodies)} messages; retry later (the others were stored)",
                sorted(refused),
            )

    async def _send(
        self, channel: aiormq.abc.AbstractChannel, queue: str, bodies: Sequence[bytes]
    ) -> list[int]:
        """Write the batch's frames at once; the positions the broker refused or returned."""
        if not isinstance(channel, aiormq.Channel) or not channel.publisher_confirms:
            raise ChannelInvalidStateError("the publishing channel has no publisher confirms")
        if "_on_confirm_frame" not in vars(channel):  # a channel not seen yet (reopened)
            channel._on_confirm_frame = partial(_settle, channel)  # type: ignore[method-assign]
        number = channel.number
        method = pamqp.frame.marshal(
            spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True), number
        )
        placeholder = "0" * _ID_DIGITS
        properties = spec.Basic.Properties(
            delivery_mode=PERSISTENT, headers={PUBLISHED_AT: time.time()}, message_id=placeholder
        )
        template = pamqp.frame.marshal(ContentHeader(0, 0, properties), number)
        # A content header frame: 7 bytes of frame header, class and weight (4), the body
        # size (8), then the properties, of which the message id comes last.
        head, middle = template[:11], template[19 : -_ID_DIGITS - 1]
        assert template[11:19] == bytes(8)
        assert template.endswith(placeholder.encode() + FRAME_END)
        largest = channel.max_content_size
        pack = _BODY_FRAME.pack
        batch = _Batch(channel.create_future(), len(bodies))
        ids: list[str] = []
        parts: list[bytes] = []
        async with channel.lock:
            first = channel.delivery_tag + 1
            for position, body in enumerate(bodies):
                tag = first + position
                message_id = f"{tag:0{_ID_DIGITS}x}"
                ids.append(message_id)
                parts += (method, head, len(body).to_bytes(8, "big"), middle)
                parts += (message_id.encode(), FRAME_END)
                for start in range(0, len(body), largest):
                    chunk = body[start : start + largest]
                    parts += (pack(3, number, len(chunk)), chunk, FRAME_END)
            confirmations = channel.confirmations
            by_id = channel.message_id_delivery_tag
            for position, message_id in enumerate(ids):
                confirmations[first + position] = _Confirm(batch, position)  # type: ignore[assignment]
                by_id[message_id] = first + position
            channel.delivery_tag = first + len(bodies) - 1
            frame = ChannelFrame(payload=b"".join(parts), should_close=False)
            try:
                await channel.write_queue.put(frame)
            except BaseException:  # not sent: the tags are free again
                channel.delivery_tag = first - 1
                for position, message_id in enumerate(ids):
                    confirmations.pop(first + position, None)
                    by_id.pop(message_id, None)
                raise
        try:
            await batch.settled
        finally:
            for message_id in ids:
                by_id.pop(message_id, None)
        return batch.refused

    async def _subscribed(self, queue: str) -> _Subscription:
        """The queue's consumer, consuming on the current channel: started on first use,
        and again after a reconnect (on the channel aio-pika reopened)."""
        consumer = self._consumers.get(queue)
        if consumer is None:
            await self.backlog(queue)  # InvalidInputError when the queue does not exist
            consumer = self._consumers.setdefault(queue, _Subscription())
        if consumer.channel is None or consumer.channel.is_closed:
            async with consumer.lock:
                if consumer.channel is None or consumer.channel.is_closed:
                    await self._subscribe(queue, consumer)
        return consumer

    async def _subscribe(self, queue: str, consumer: _Subscription) -> None:
        _, robust = await self._channels()
        try:
            channel = await asyncio.wait_for(robust.get_underlay_channel(), RECONNECTING_S)
        except TimeoutError:
            raise UnavailableError(
                f"lost the connection to RabbitMQ at {self._shown}; reconnecting, retry later"
            ) from None
        # Deliveries of a channel lost in an outage are void: the server redelivers them.
        consumer.buffer.clear()
        self._forget_closed_channels()
        buffer, arrived, acks = consumer.buffer, consumer.arrived, self._acks

        async def deliver(message: DeliveredMessage) -> None:
            outstanding = acks.get(message.channel)
            if outstanding is None:
                outstanding = acks[message.channel] = _Acks()
            outstanding.outstanding.append(message)
            buffer.append(message)
            arrived.set()

        try:
            await channel.basic_consume(queue, deliver, no_ack=False)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            raise UnavailableError(
                f"cannot consume {queue!r} on RabbitMQ at {self._shown} "
                f"({error or type(error).__name__}); retry later"
            ) from error
        consumer.channel = channel

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        """Up to ``max_messages`` prefetched deliveries; waits ``timeout_ms`` for the first,
        then up to 5 ms more (within ``timeout_ms``) for a batch short of ``max_messages``."""
        consumer = await self._subscribed(queue)
        buffer = consumer.buffer
        if len(buffer) < max_messages:
            start = time.monotonic()
            if not buffer and not await _arrival(consumer, timeout_ms / 1000):
                return []
            # Deliveries come one callback each: a short wait takes the rest of a burst.
            deadline = min(time.monotonic() + GATHER_S, start + timeout_ms / 1000)
            while len(buffer) < max_messages:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await _arrival(consumer, remaining):
                    break
        messages = [buffer.popleft() for _ in range(min(max_messages, len(buffer)))]
        # Deliveries of a channel lost in an outage are void: the server redelivers them.
        return [self._delivery(m) for m in messages if not m.channel.is_closed]

    @staticmethod
    def _delivery(message: DeliveredMessage) -> Delivery:
        headers = message.header.properties.headers or {}
        count = headers.get("x-delivery-count", 0)
        published = headers.get(PUBLISHED_AT)
        return Delivery(
            message.body,
            int(count) + 1 if isinstance(count, int) else 1,
            message,
            float(published) if isinstance(published, int | float) else None,
        )

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Ack with ``multiple`` up to the highest delivery below which all are done (acks
        are not confirmed by AMQP; a lost one means a redelivery)."""
        by_channel: dict[aiormq.abc.AbstractChannel, list[int]] = {}
        try:
            for delivery in deliveries:
                message: DeliveredMessage = delivery.handle
                by_channel.setdefault(message.channel, []).append(message.delivery_tag or 0)
            for channel, tags in by_channel.items():
                if channel.is_closed:
                    raise ChannelInvalidStateError("the channel of these deliveries is closed")
                last = self._acks[channel].finish(tags)
                if last is not None:
                    await channel.basic_ack(last.delivery_tag or 0, multiple=True)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as error:
            self._forget_closed_channels()
            raise UnavailableError(
                f"cannot ack on RabbitMQ at {self._shown} ({error or type(error).__name__}); "
                "the server delivers those messages again"
            ) from error

    def _forget_closed_channels(self) -> None:
        for channel in [c for c in self._acks if c.is_closed]:
            del self._acks[channel]

    async def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Publish the dead letter (confirmed), then ack the original."""
        spec_ = self._specs.get(queue)
        dead = spec_.dead_letter_name if spec_ is not None else f"{queue}.dead"
        await self.publish(dead, [dead_letter_body(queue, delivery, reason)])
        await self.ack(queue, [delivery])

    async def backlog(self, queue: str) -> int | None:
        """Ready messages in the queue (a passive declare; unacked ones are not counted)."""
        channel = await self._side_channel()
        try:
            # Not robust: a robust channel answers a passive declare from its cache.
            declared = await channel.declare_queue(queue, passive=True, robust=False)
        except ChannelNotFoundEntity:
            self._side = None
            raise InvalidInputError(f"queue {queue!r} is not declared; declare it first") from None
        count = declared.declaration_result.message_count
        return int(count) if count is not None else None

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._publisher = self._consumer = self._side = None
        self._consumers.clear()
        self._acks.clear()


async def _settle(channel: aiormq.Channel, frame: ConfirmationFrameType) -> None:
    """Settle the confirmations a confirm frame covers, at once.

    aiormq 7.2 answers a ``multiple`` confirm by walking every outstanding confirmation and
    scheduling a callback for each one it covers, for every frame — a fifth of a publishing
    worker's time with two batches of 256 in flight.
    """
    tag = frame.delivery_tag or 0
    if not getattr(frame, "multiple", False):
        channel._confirm_delivery(tag, frame)
        return
    for covered in [t for t in channel.confirmations if t <= tag]:
        channel._confirm_delivery(covered, frame)


async def _arrival(consumer: _Subscription, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the next delivery; whether one came."""
    consumer.arrived.clear()
    try:
        await asyncio.wait_for(consumer.arrived.wait(), timeout_s)
    except TimeoutError:
        return False
    return True

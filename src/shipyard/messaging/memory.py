"""``memory://`` — an in-process broker for unit tests and single-process use.

Queues live in a namespace shared by every ``MemoryBroker`` of the process with the same
URL, so two brokers act like two connections to one server. A delivery not acked within
``redelivery_ms`` (its consumer is gone) is delivered again with ``attempts`` + 1.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from shipyard.errors import BackpressureError, InvalidInputError
from shipyard.messaging.broker import (
    Delivery,
    QueueSpec,
    dead_letter_body,
)


@dataclass
class _Message:
    id: int
    body: bytes
    published_at: float
    attempts: int = 0


@dataclass
class _Queue:
    spec: QueueSpec
    ready: deque[_Message] = field(default_factory=deque)
    unacked: dict[int, tuple[_Message, float, int]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


_NAMESPACES: dict[str, dict[str, _Queue]] = {}
_IDS = itertools.count(1)


class MemoryBroker:
    """In-process queues with the same contract as the network brokers."""

    def __init__(self, url: str = "memory://", *, redelivery_ms: float = 30_000) -> None:
        self._queues = _NAMESPACES.setdefault(url, {})
        self._redelivery = redelivery_ms / 1000
        self._owner = next(_IDS)

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise InvalidInputError(f"queue {name!r} is not declared; declare it first") from None

    async def declare(self, spec: QueueSpec) -> None:
        """Create the queue and its dead-letter queue if missing."""
        self._queues.setdefault(spec.name, _Queue(spec))
        self._queues.setdefault(spec.dead_letter_name, _Queue(QueueSpec(spec.dead_letter_name)))

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Append the batch, all or nothing."""
        target = self._queue(queue)
        limit = target.spec.max_length
        if limit is not None and len(target.ready) + len(target.unacked) + len(bodies) > limit:
            raise BackpressureError(
                f"queue {queue!r} is full ({limit} messages); retry later", range(len(bodies))
            )
        now = time.time()
        target.ready.extend(_Message(next(_IDS), bytes(body), now) for body in bodies)
        if bodies:
            target.arrived.set()

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        """Take up to ``max_messages``; wait at most ``timeout_ms`` for the first."""
        target = self._queue(queue)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            self._requeue_expired(target)
            if target.ready:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            target.arrived.clear()
            try:
                await asyncio.wait_for(target.arrived.wait(), min(remaining, self._redelivery))
            except TimeoutError:
                continue
        deliveries: list[Delivery] = []
        expires = time.monotonic() + self._redelivery
        while target.ready and len(deliveries) < max_messages:
            message = target.ready.popleft()
            message.attempts += 1
            target.unacked[message.id] = (message, expires, self._owner)
            deliveries.append(
                Delivery(message.body, message.attempts, message.id, message.published_at)
            )
        return deliveries

    def _requeue_expired(self, target: _Queue) -> None:
        now = time.monotonic()
        expired = [mid for mid, (_, expires, _) in target.unacked.items() if expires <= now]
        for mid in sorted(expired, reverse=True):
            target.ready.appendleft(target.unacked.pop(mid)[0])

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Forget the deliveries."""
        target = self._queue(queue)
        for delivery in deliveries:
            target.unacked.pop(delivery.handle, None)

    async def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Dead-letter the delivery with its reason, then ack it."""
        spec = self._queue(queue).spec
        dead = self._queue(spec.dead_letter_name)
        dead.ready.append(
            _Message(next(_IDS), dead_letter_body(queue, delivery, reason), time.time())
        )
        dead.arrived.set()
        await self.ack(queue, [delivery])

    async def backlog(self, queue: str) -> int | None:
        """Messages ready and not taken by any consumer."""
        return len(self._queue(queue).ready)

    async def close(self) -> None:
        """Return this broker's unacked deliveries to their queues, as a closed connection."""
        for target in self._queues.values():
            mine = [mid for mid, (_, _, owner) in target.unacked.items() if owner == self._owner]
            for mid in sorted(mine, reverse=True):
                target.ready.appendleft(target.unacked.pop(mid)[0])
            if mine:
                target.arrived.set()

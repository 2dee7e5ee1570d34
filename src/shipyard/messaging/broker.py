"""The ``Broker`` protocol every messaging backend implements, and what it hands out.

A broker moves opaque message bodies between named queues with at-least-once delivery:
``publish`` returns only once the broker has confirmed every message of the batch;
``consume`` returns up to N deliveries or what arrived within T ms; a delivery stays
invisible to other consumers until it is ``ack``-ed (done) or ``reject``-ed (moved to the
queue's dead-letter queue with a reason). A delivery neither acked nor rejected — its
consumer crashed — comes back to another consumer after the backend's redelivery delay,
with ``attempts`` one higher; every backend counts attempts exactly, so a consumer can
dead-letter a message that keeps crashing whoever takes it. ``max_deliveries`` tells a
backend that can bound deliveries itself (NATS ``max_deliver``) where the consumer's own
bound lies, as a backstop.

Dead letters are JSON: ``{"queue", "reason", "attempts", "dead_lettered_at", "body"}``
where ``body`` is the original body as text (or ``body_base64`` when it is not UTF-8).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from shipyard.errors import BackpressureError, ShipyardError, UnavailableError

MAX_BACKOFF_S = 2.0


@dataclass(frozen=True)
class QueueSpec:
    """How a queue is declared: its dead-letter queue, optional length and delivery bounds."""

    name: str
    dead_letter: str | None = None
    max_length: int | None = None
    max_deliveries: int | None = None

    @property
    def dead_letter_name(self) -> str:
        """The dead-letter queue: given, or ``<name>.dead``."""
        return self.dead_letter or f"{self.name}.dead"


@dataclass(frozen=True)
class Delivery:
    """One received message; ``handle`` is the backend's own reference for ack/reject."""

    body: bytes
    attempts: int
    handle: Any = field(repr=False, compare=False)
    published_at: float | None = None


class Broker(Protocol):
    """Publish and consume with confirmation, ack and dead-lettering."""

    async def declare(self, spec: QueueSpec) -> None:
        """Create the queue and its dead-letter queue if missing (idempotent)."""
        ...

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Send a batch; returns when the broker confirmed all. ``BackpressureError`` if full."""
        ...

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits at most ``timeout_ms`` for the first."""
        ...

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Mark deliveries done; they are never delivered again."""
        ...

    async def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Move a delivery to the queue's dead-letter queue with the reason, then ack it."""
        ...

    async def backlog(self, queue: str) -> int | None:
        """Messages waiting that no consumer has taken yet (consumer lag); None if unknown."""
        ...

    async def close(self) -> None:
        """Release connections; unacked deliveries return to the queue."""
        ...


async def publish_patiently(
    broker: Broker,
    queue: str,
    bodies: Sequence[bytes],
    *,
    give_up: Callable[[], bool] = lambda: False,
    waiting: Callable[[ShipyardError], None] = lambda error: None,
) -> None:
    """Publish until the broker stored every body.

    A full queue gets only what it refused again, after a back-off that doubles (up to 2 s)
    while it stays full; an unreachable broker is retried the same way (the clients
    reconnect), sending the whole batch again — stored twice at worst, never lost.
    ``waiting`` is told each wait's cause; once ``give_up()`` is true the last error is
    raised instead of waiting again.
    """
    pending = list(bodies)
    delay = 0.01
    while pending:
        try:
            await broker.publish(queue, pending)
            return
        except BackpressureError as error:
            pending = [pending[i] for i in error.refused]
            waiting(error)
            if give_up():
                raise
        except UnavailableError as error:
            waiting(error)
            if give_up():
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF_S)


def dead_letter_body(queue: str, delivery: Delivery, reason: str) -> bytes:
    """The JSON a dead-letter queue holds for a rejected delivery."""
    record: dict[str, Any] = {
        "queue": queue,
        "reason": reason,
        "attempts": delivery.attempts,
        "dead_lettered_at": time.time(),
    }
    try:
        record["body"] = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(delivery.body).decode("ascii")
    return orjson.dumps(record)

"""The producer's and the reader's side of a stream: publish input messages in chunks,
read results (or dead letters) back. Used by ``shipyard publish``, the demo and the
benchmarks; any AMQP, NATS or Redis client can do the same with the queue name alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipyard.errors import ShipyardError, UnavailableError
from shipyard.messaging import Broker, QueueSpec, publish_patiently


async def publish_all(
    broker: Broker,
    queue: str,
    bodies: Sequence[bytes],
    *,
    chunk: int = 1000,
    patience_s: float = 60.0,
    progress: Callable[[int], None] = lambda n: None,
) -> None:
    """Declare ``queue`` (first declaration wins) and publish every body, ``chunk`` at a
    time, each chunk confirmed; waits up to ``patience_s`` for room in a full queue."""
    await broker.declare(QueueSpec(queue))
    sent = 0
    for start in range(0, len(bodies), chunk):
        part = bodies[start : start + chunk]
        deadline = time.monotonic() + patience_s

        def impatient(deadline: float = deadline) -> bool:
            return time.monotonic() > deadline

        try:
            await publish_patiently(broker, queue, part, give_up=impatient)
        except ShipyardError as error:
            raise UnavailableError(
                f"published {sent:,} of {len(bodies):,} messages, then waited {patience_s:.0f} s "
                f"for {queue!r} ({error}); is a scorer consuming it? The rest were not sent"
            ) from error
        sent += len(part)
        progress(len(part))


@dataclass
class Collected:
    """Messages read from a queue: parsed, and how many times each key (the input's id for
    results, the original body for dead letters) came."""

    records: list[dict[str, Any]] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def distinct(self) -> int:
        """Distinct keys seen (a redelivered input may be scored or dead-lettered twice)."""
        return len(self.ids)

    @property
    def duplicates(self) -> int:
        """Records beyond the first of their key."""
        return sum(self.ids.values()) - len(self.ids)


async def collect(
    broker: Broker,
    queue: str,
    expected: int,
    *,
    timeout_s: float,
    key: Callable[[dict[str, Any]], object] = lambda record: record.get("id"),
    belongs: Callable[[dict[str, Any]], bool] = lambda record: True,
    progress: Callable[[int], None] = lambda n: None,
) -> Collected:
    """Consume and ack ``queue`` until ``expected`` distinct keys came (by default the
    ``id``; for dead letters, ``key=dead_letter_key``), or ``timeout_s`` passed with nothing
    arriving — a quiet queue, not a slow one, ends the wait. A broker that goes away
    meanwhile is waited for (records it delivers again are counted once by key). Records
    that do not ``belong`` (another run's) are acked and left out."""
    await _patiently(lambda: broker.declare(QueueSpec(queue)), timeout_s)
    collected = Collected()

    quiet_since = time.monotonic()
    while collected.distinct < expected and time.monotonic() - quiet_since < timeout_s:
        try:
            deliveries = await broker.consume(queue, 1000, 200)
        except UnavailableError:
            await asyncio.sleep(0.2)
            continue
        if not deliveries:
            await asyncio.sleep(0)
            continue
        quiet_since = time.monotonic()
        before = collected.distinct
        for delivery in deliveries:
            record = orjson.loads(delivery.body)
            if not isinstance(record, dict) or not belongs(record):
                continue
            collected.records.append(record)
            seen = key(record)
            if isinstance(seen, str):
                collected.ids[seen] = collected.ids.get(seen, 0) + 1
        with contextlib.suppress(UnavailableError):  # unacked: they come again, same ids
            await broker.ack(queue, deliveries)
        progress(collected.distinct - before)
    return collected


def dead_letter_key(record: dict[str, Any]) -> object:
    """What makes a dead letter distinct: the original body (text or base64)."""
    return record.get("body", record.get("body_base64"))


async def _patiently(call: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await call()
            return
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)

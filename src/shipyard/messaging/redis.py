"""``redis://`` — Redis Streams through redis-py's asyncio client.

A queue is a stream of the same name read by one consumer group (``group``, default
``shipyard``); each broker is a consumer of that group, so consumers compete for entries.
An entry holds the body in field ``b`` and the publish time in field ``t``.

- ``declare`` creates the group (at ``$``, ``MKSTREAM``) on the queue and its dead-letter
  stream, and records the spec in the hash ``shipyard:queue:<name>`` (first declaration
  wins) so that publishers in other processes see the bound and the dead-letter stream.
- ``publish`` is one Lua script: it refuses an undeclared queue, checks the bound and adds
  the whole batch, atomically; it returns once Redis answered.
- The bound counts entries not yet acked: ``ack`` ``XACK``s and ``XDEL``s the entries in
  one script (``reject`` in one transaction), so ``XLEN`` is exactly the waiting plus
  in-flight entries. A long ack (a scorer acks what one prediction-log write released, a
  few thousand entries) goes as one script per ``ACK_CHUNK`` entries, one after the other:
  Redis runs a script to its end before anything else, and one of 4,096 entries (~7 ms)
  held up the consumes and publishes of every worker behind it.
  One group per queue follows from that: a second group would lose what the first acked.
- ``consume`` reads new entries with ``XREADGROUP >`` and only when there are none, waits
  in a blocking one. On its first call for a queue, and then at most every quarter of
  ``redelivery_ms``, it runs one Lua script instead — ``XAUTOCLAIM`` entries idle for
  ``redelivery_ms`` (a dead consumer's), then ``XREADGROUP >`` for the rest — so such
  entries come back within 1.25 × ``redelivery_ms`` (claiming on every call cost Redis
  a third of its time per message). ``attempts`` is the entry's delivery count: 1 for a
  fresh read, and for a claimed entry ``XPENDING``'s count, which ``XAUTOCLAIM`` bumped.
- ``reject`` adds the dead letter and acks and deletes the original in one transaction.
- ``close`` closes the connections; pending entries stay pending and are claimed by
  another consumer after ``redelivery_ms``.

Lua scripts touch the stream and its hash, so a queue must live on one node (no Cluster).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shipyard.errors import BackpressureError, InvalidInputError, UnavailableError
from shipyard.messaging.backends import shown_url
from shipyard.messaging.broker import (
    Delivery,
    QueueSpec,
    dead_letter_body,
)

BODY = b"b"
PUBLISHED_AT = b"t"
ACK_CHUNK = 1024

# KEYS: spec hash, queue stream, dead-letter stream, dead-letter spec hash.
# ARGV: dead-letter name, max length ("" when unbounded). First declaration wins.
_DECLARE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'dead_letter', ARGV[1])
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'max_length', ARGV[2]) end
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'dead_letter', ARGV[1] .. '.dead')
end
return 1
"""

# KEYS: stream, spec hash. ARGV: publish time, then the bodies.
# Returns {1} when added, {0, limit} when full, {-1} when the queue was never declared.
_PUBLISH = """
if redis.call('EXISTS', KEYS[2]) == 0 then return {-1} end
local limit = redis.call('HGET', KEYS[2], 'max_length')
if limit and redis.call('XLEN', KEYS[1]) + #ARGV - 1 > tonumber(limit) then
  return {0, tonumber(limit)}
end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'b', ARGV[i], 't', ARGV[1])
end
return {1}
"""

# KEYS: stream, group. ARGV: entry ids. Acks and deletes them (in slices: Lua's unpack is
# bounded).
_ACK = """
for i = 1, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  redis.call('XACK', KEYS[1], KEYS[2], unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, last))
end
return #ARGV
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, claim cursor, count.
# Returns {next cursor, claimed entries, their delivery counts, fresh entries}.
_TAKE = """
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  'COUNT', ARGV[5])
local entries = claimed[2]
local counts = {}
for i, entry in ipairs(entries) do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
  counts[i] = pending[1] and pending[1][4] or 1
end
local fresh = {}
local wanted = tonumber(ARGV[5]) - #entries
if wanted > 0 then
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', wanted,
    'STREAMS', KEYS[1], '>')
  if read then fresh = read[1][2] end
end
return {claimed[1], entries, counts, fresh}
"""


def _as_sent(response: Any, **options: Any) -> Any:
    return response


def spec_key(queue: str) -> str:
    """The hash that records how ``queue`` was declared."""
    return f"shipyard:queue:{queue}"


def _fields(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    items = list(raw or ())
    return dict(zip(items[::2], items[1::2], strict=True))


def _delivery(entry: Any, attempts: int) -> Delivery | None:
    entry_id, raw = entry[0], entry[1]
    if raw is None:  # deleted while pending (Redis 6.2 reports it so)
        return None
    if isinstance(raw, list) and len(raw) == 4 and raw[0] == BODY and raw[2] == PUBLISHED_AT:
        return Delivery(raw[1], attempts, entry_id, float(raw[3]))  # as ``publish`` adds it
    fields = _fields(raw)
    published = fields.get(PUBLISHED_AT)
    return Delivery(
        fields.get(BODY, b""),
        attempts,
        entry_id,
        float(published) if published is not None else None,
    )


class RedisBroker:
    """Streams with one consumer group, claims of idle entries, a dead-letter stream."""

    def __init__(
        self,
        url: str,
        *,
        redelivery_ms: float = 30_000,
        group: str = "shipyard",
        consumer: str | None = None,
    ) -> None:
        self._shown = shown_url(url)
        self._redis: Redis = Redis.from_url(url, decode_responses=False, socket_connect_timeout=5)
        # Entries as Redis sends them: redis-py would turn each one's fields into a dict
        # (a tenth of a consuming worker's time), which ``_delivery`` does not need.
        self._redis.set_response_callback("XREADGROUP", _as_sent)
        self._redelivery_ms = max(1, int(redelivery_ms))
        self._group = group
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._declare = self._redis.register_script(_DECLARE)
        self._publish = self._redis.register_script(_PUBLISH)
        self._take = self._redis.register_script(_TAKE)
        self._ack = self._redis.register_script(_ACK)
        self._cursors: dict[str, bytes] = {}
        self._claimed_at: dict[str, float] = {}  # when consume last looked for idle entries
        self._claim_every = self._redelivery_ms / 4000
        self._dead_letters: dict[str, str] = {}
        self._specs: dict[str, QueueSpec] = {}

    @asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise UnavailableError(
                f"cannot reach Redis at {self._shown}: {error or type(error).__name__}; "
                "check the URL and that the server runs"
            ) from error
        except ResponseError as error:
            if str(error).startswith("NOGROUP"):
                raise InvalidInputError(
                    f"queue not declared for consumer group {self._group!r} ({error}); "
                    "declare it first"
                ) from error
            raise

    async def declare(self, spec: QueueSpec) -> None:
        """Create the group on the queue and its dead-letter stream; record the spec."""
        dead = spec.dead_letter_name
        async with self._reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream in (spec.name, dead):
                    pipe.xgroup_create(stream, self._group, id="$", mkstream=True)
                results = await pipe.execute(raise_on_error=False)
            for result in results:
                if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                    raise result
            limit = "" if spec.max_length is None else str(spec.max_length)
            await self._declare(
                keys=[spec_key(spec.name), spec.name, dead, spec_key(dead)], args=[dead, limit]
            )
        self._specs[spec.name] = spec

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Add the batch in one atomic script; ``BackpressureError`` if it would overfill."""
        if not bodies:
            return
        async with self._reachable():
            result = await self._publish(
                keys=[queue, spec_key(queue)], args=[repr(time.time()), *bodies]
            )
        if result[0] == -1:
            raise InvalidInputError(f"queue {queue!r} is not declared; declare it first")
        if result[0] == 0:
            raise BackpressureError(
                f"queue {queue!r} is full ({result[1]} messages not yet acked, the batch "
                f"has {len(bodies)}); retry later",
                range(len(bodies)),
            )

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        """Read new entries (and, when a claim is due, a dead consumer's idle ones); block up
        to ``timeout_ms`` when there are none."""
        if max_messages <= 0:
            return []
        deadline = time.monotonic() + timeout_ms / 1000
        async with self._reachable():
            while True:
                if self._claim_due(queue):
                    deliveries = await self._take_ready(queue, max_messages)
                else:
                    deliveries = await self._read(queue, max_messages, None)
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if deliveries or remaining_ms <= 0:
                    return deliveries
                # Wake up when a claim is due, to take a dead consumer's entries.
                wait_ms = min(remaining_ms, max(1, int(self._claim_every * 1000)))
                deliveries = await self._read(queue, max_messages, wait_ms)
                if deliveries:
                    return deliveries

    def _claim_due(self, queue: str) -> bool:
        """Whether to look for idle entries now: on the first consume of a queue, then at
        most every quarter of the redelivery delay."""
        now = time.monotonic()
        last = self._claimed_at.get(queue)
        if last is not None and now - last < self._claim_every:
            return False
        self._claimed_at[queue] = now
        return True

    async def _read(self, queue: str, max_messages: int, block_ms: int | None) -> list[Delivery]:
        response = await self._redis.xreadgroup(
            self._group, self._consumer, {queue: ">"}, count=max_messages, block=block_ms
        )
        fresh = self._fresh_entries(response)
        return [d for d in (_delivery(e, 1) for e in fresh) if d is not None]

    async def _take_ready(self, queue: str, max_messages: int) -> list[Delivery]:
        cursor = self._cursors.get(queue, b"0-0")
        next_cursor, claimed, counts, fresh = await self._take(
            keys=[queue],
            args=[self._group, self._consumer, self._redelivery_ms, cursor, max_messages],
        )
        self._cursors[queue] = next_cursor
        taken = [_delivery(e, int(n)) for e, n in zip(claimed, counts, strict=True)]
        taken += [_delivery(e, 1) for e in fresh]
        return [d for d in taken if d is not None]

    @staticmethod
    def _fresh_entries(response: Any) -> list[Any]:
        if not response:
            return []
        if isinstance(response, dict):  # RESP3: {stream: entries}
            return [entry for entries in response.values() for entry in entries]
        return [entry for _, entries in response for entry in entries]

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """``XACK`` and ``XDEL`` the entries, so they leave the bound: one script per
        ``ACK_CHUNK`` entries, so that other clients' commands run between them."""
        keys = [queue, self._group]
        async with self._reachable():
            for start in range(0, len(deliveries), ACK_CHUNK):
                chunk = deliveries[start : start + ACK_CHUNK]
                await self._ack(keys=keys, args=[d.handle for d in chunk])

    async def _dead_letter(self, queue: str) -> str:
        dead = self._dead_letters.get(queue)
        if dead is None and queue in self._specs:
            dead = self._dead_letters[queue] = self._specs[queue].dead_letter_name
        if dead is None:
            async with self._reachable():
                recorded = await self._redis.hget(spec_key(queue), "dead_letter")
            if isinstance(recorded, bytes):
                recorded = recorded.decode()
            dead = recorded or f"{queue}.dead"
            self._dead_letters[queue] = dead
        return dead

    async def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Add the dead letter, ack and delete the original, in one transaction."""
        dead = await self._dead_letter(queue)
        body = dead_letter_body(queue, delivery, reason)
        async with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(dead, {BODY: body, PUBLISHED_AT: repr(time.time())})
            pipe.xack(queue, self._group, delivery.handle)
            pipe.xdel(queue, delivery.handle)
            await pipe.execute()

    async def backlog(self, queue: str) -> int | None:
        """Entries not yet read by the group: the stream's length less those in flight."""
        async with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.xlen(queue)
            pipe.xpending(queue, self._group)
            length, pending = await pipe.execute()
        return max(0, int(length) - int(pending["pending"]))

    async def close(self) -> None:
        """Close the connections; pending entries are claimed by others after the delay."""
        await self._redis.aclose()

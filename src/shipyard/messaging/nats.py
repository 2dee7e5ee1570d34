"""``nats://`` (and ``tls://``) — NATS JetStream through nats-py.

A queue is a stream whose one subject is the queue's name, read by one durable pull
consumer (``shipyard``) that every broker shares, so consumers compete for messages.

- Stream names cannot hold ``.``, ``*``, ``>``, whitespace or path separators, while queue
  names such as ``transactions.dead`` do: the stream of a queue is its name with every
  character outside ``[A-Za-z0-9_-]`` replaced by ``_`` (cut to 48 characters), then ``_``
  and the first 10 hex digits of the name's SHA-256 (``stream_name``), so two names that
  sanitize alike still get their own streams. The stream's description records the queue
  and its dead-letter queue as JSON, for brokers that did not declare it (and for people).
- Streams keep messages on file with work-queue retention: an acked message is removed, so
  the stream holds exactly the waiting plus the in-flight messages. ``max_length`` is the
  stream's ``max_msgs``; every stream discards new messages when a limit is reached, so a
  full queue refuses publishes (``BackpressureError`` names which) and never drops old ones.
- The consumer acks explicitly with ``ack_wait`` = ``redelivery_ms``; a queue declared with
  ``max_deliveries`` gets ``max_deliver`` one past it — the consumer dead-letters the
  delivery past its bound itself, the server's limit is the backstop. ``declare`` creates
  what is missing and never changes what exists: the first declaration wins (of two
  declaring the same new consumer at the same instant, the server keeps the later).
- ``publish`` sends the whole batch at once and waits for every JetStream ack, matched to
  its message (``jetstream.PublishAcks``); ``consume`` takes what is ready or waits for the
  first message (``jetstream.Pull``). ``attempts`` is JetStream's delivery count,
  ``published_at`` the stream's timestamp. The subjects and statuses this takes are
  described in ``shipyard.messaging.jetstream``.
- ``reject`` publishes the dead letter (acked by JetStream), then acks the original.
- The client reconnects forever, 0.5 s between attempts, and keeps its subscriptions; while
  disconnected every operation raises ``UnavailableError`` at once, and a wait notices a
  lost connection within 0.25 s. The first connection is tried twice only, so an
  unreachable server is reported within a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, NoServersError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError

from shipyard.errors import (
    BackpressureError,
    ConfigurationError,
    InvalidInputError,
    UnavailableError,
)
from shipyard.messaging.backends import shown_url
from shipyard.messaging.broker import (
    Delivery,
    QueueSpec,
    dead_letter_body,
)
from shipyard.messaging.jetstream import (
    STREAM_IN_USE,
    SUBJECTS_OVERLAP,
    Ack,
    PublishAcks,
    Pull,
    delivered,
    read_ack,
)

CONSUMER = "shipyard"
MAX_ACK_PENDING = 20_000
RECONNECT_WAIT_S = 0.5
_SUBJECT = re.compile(r"[^\s*>.]+(\.[^\s*>.]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_log = logging.getLogger(__name__)


def stream_name(queue: str) -> str:
    """The JetStream stream that holds ``queue``."""
    digest = hashlib.sha256(queue.encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', queue)[:48]}_{digest}"


def _subject(queue: str) -> str:
    if not _SUBJECT.fullmatch(queue):
        raise InvalidInputError(
            f"queue name {queue!r} cannot be a NATS subject: use dot-separated words "
            "without spaces, '*' or '>'"
        )
    return queue


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


class NatsBroker:
    """File-stored work-queue streams, one shared durable pull consumer per queue."""

    def __init__(
        self, url: str, *, redelivery_ms: float = 30_000, timeout_ms: float = 5_000
    ) -> None:
        self._servers = [server.strip() for server in url.split(",")]
        self._shown = shown_url(url)
        self._ack_wait = max(1, int(redelivery_ms)) / 1000
        self._timeout = timeout_ms / 1000
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._acks = PublishAcks()
        self._pulls: dict[str, Pull] = {}
        self._specs: dict[str, QueueSpec] = {}
        self._dead_letters: dict[str, str] = {}
        self._last_error: Exception | None = None

    async def _client(self) -> tuple[Client, JetStreamContext]:
        async with self._lock:
            if self._nc is None or self._js is None:
                self._nc, self._js = await self._connect()
        if not self._nc.is_connected:
            raise UnavailableError(
                f"lost the connection to NATS at {self._shown}; reconnecting, retry later"
            )
        return self._nc, self._js

    async def _connect(self) -> tuple[Client, JetStreamContext]:
        nc = Client()
        try:
            await nc.connect(
                self._servers,
                error_cb=self._client_error,
                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]  # int in stubs
                max_reconnect_attempts=1,
                ping_interval=10,
                name="shipyard",
                # Queue names are checked once (``_subject``); inboxes and JetStream's reply
                # subjects need no check on every message published.
                skip_subject_validation=True,
            )
        except (NoServersError, NatsError, OSError) as error:
            # NoServersError says only that the attempts ran out; the cause came before it.
            reason = _describe(self._last_error or error)
            await nc.close()
            raise UnavailableError(
                f"cannot reach NATS at {self._shown}: {reason}; check the URL and that "
                "nats-server runs with JetStream (-js)"
            ) from None
        # Connected once: from now on reconnect forever (nats-py reads this option on each
        # attempt); the first connection was tried twice only to fail fast.
        nc.options["max_reconnect_attempts"] = -1
        js = nc.jetstream(timeout=self._timeout)
        try:
            await js.account_info()
            await self._acks.listen(nc)
        except ServiceUnavailableError:
            await nc.close()
            raise ConfigurationError(
                f"NATS at {self._shown} runs without JetStream; start nats-server with -js "
                "(and -sd DIR for where it stores messages)"
            ) from None
        except (NatsError, OSError) as error:
            await nc.close()
            raise UnavailableError(
                f"NATS at {self._shown} did not answer a JetStream request "
                f"({_describe(error)}); retry later"
            ) from error
        return nc, js

    async def _client_error(self, error: Exception) -> None:
        # nats-py logs every connection error at ERROR by default; the broker reports the
        # ones that matter as UnavailableError, so the client's own reports go to debug.
        self._last_error = error
        _log.debug("nats client: %s", _describe(error))

    @asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        try:
            yield
        except MaxPayloadError as error:
            raise InvalidInputError(
                f"a message is larger than NATS at {self._shown} accepts (max_payload); "
                "send smaller messages or raise the server's max_payload"
            ) from error
        except APIError as error:
            if error.code == 503:
                raise UnavailableError(
                    f"JetStream at {self._shown} is unavailable ({error.description}); retry later"
                ) from error
            raise ConfigurationError(
                f"NATS at {self._shown} refused a JetStream request: {error.description} "
                f"(error {error.err_code}); check the server's JetStream limits"
            ) from error
        except (NatsError, OSError) as error:
            raise UnavailableError(
                f"NATS at {self._shown} did not answer ({_describe(error)}); retry later"
            ) from error

    async def declare(self, spec: QueueSpec) -> None:
        """Create the streams and consumers of the queue and its dead-letter queue if missing."""
        dead = _subject(spec.dead_letter_name)
        _, js = await self._client()
        async with self._reachable():
            await self._ensure(js, dead, f"{dead}.dead", None, None)
            max_deliver = None if spec.max_deliveries is None else spec.max_deliveries + 1
            await self._ensure(js, _subject(spec.name), dead, spec.max_length, max_deliver)
        self._specs[spec.name] = spec

    async def _ensure(
        self,
        js: JetStreamContext,
        queue: str,
        dead: str,
        max_length: int | None,
        max_deliver: int | None,
    ) -> None:
        stream = stream_name(queue)
        try:
            await js.stream_info(stream)
        except NotFoundError:
            config = js_api.StreamConfig(
                name=stream,
                description=orjson.dumps({"queue": queue, "dead_letter": dead}).decode(),
                subjects=[queue],
                retention=js_api.RetentionPolicy.WORK_QUEUE,
                storage=js_api.StorageType.FILE,
                max_msgs=-1 if max_length is None else max_length,
                discard=js_api.DiscardPolicy.NEW,
            )
            try:
                await js.add_stream(config)
            except BadRequestError as error:
                if error.err_code == SUBJECTS_OVERLAP:
                    raise ConfigurationError(
                        f"another JetStream stream already takes subject {queue!r}; delete "
                        "it or choose another queue name"
                    ) from error
                if error.err_code != STREAM_IN_USE:  # else another broker was first
                    raise
        try:
            await js.consumer_info(stream, CONSUMER)
        except NotFoundError:
            # Only when missing: creating an existing consumer would update its settings.
            await js.add_consumer(
                stream,
                js_api.ConsumerConfig(
                    name=CONSUMER,
                    durable_name=CONSUMER,
                    ack_policy=js_api.AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait,
                    max_deliver=-1 if max_deliver is None else max_deliver,
                    max_ack_pending=MAX_ACK_PENDING,
                ),
            )

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Send the batch at once; return when JetStream acked all. Full: ``BackpressureError``."""
        if not bodies:
            return
        nc, _ = await self._client()
        subject = _subject(queue)
        async with self._reachable():
            replies = await self._acks.publish(nc, subject, bodies, self._timeout)
        refused: list[int] = []
        failures: list[str] = []
        for position, reply in enumerate(replies):
            answer, description = read_ack(reply)
            if answer is Ack.STORED:
                continue
            if answer is Ack.FULL:
                refused.append(position)
                continue
            if answer is Ack.NO_STREAM and not failures:
                await self._missing(queue)
            failures.append(description)
        if failures:
            raise UnavailableError(
                f"NATS at {self._shown} stored {len(bodies) - len(failures) - len(refused)} of "
                f"{len(bodies)} messages for queue {queue!r} ({failures[0]}); publish the "
                "batch again later (duplicates are possible)"
            )
        if refused:
            raise BackpressureError(
                f"queue {queue!r} is full: NATS refused {len(refused)} of {len(bodies)} "
                "messages; retry later (the others were stored)",
                refused,
            )

    async def _missing(self, queue: str) -> None:
        """Raise ``InvalidInputError`` when no stream holds ``queue``."""
        _, js = await self._client()
        async with self._reachable():
            try:
                await js.stream_info(stream_name(queue))
            except NotFoundError:
                raise InvalidInputError(
                    f"queue {queue!r} is not declared; declare it first"
                ) from None

    async def _pull(self, queue: str) -> tuple[Client, Pull]:
        nc, js = await self._client()
        pull = self._pulls.get(queue)
        if pull is None:
            stream = stream_name(_subject(queue))
            async with self._reachable():
                try:
                    await js.consumer_info(stream, CONSUMER)
                except NotFoundError:
                    raise InvalidInputError(
                        f"queue {queue!r} is not declared; declare it first"
                    ) from None
                if queue in self._pulls:  # another consume of this queue was quicker
                    return nc, self._pulls[queue]
                pull = Pull(stream, CONSUMER, self._shown, self._timeout)
                # Registered first, locked until subscribed: a concurrent consume waits.
                self._pulls[queue] = pull
                async with pull.lock:
                    try:
                        await pull.listen(nc)
                    except BaseException:
                        del self._pulls[queue]
                        raise
        return nc, pull

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        """Up to ``max_messages`` ready messages; waits up to ``timeout_ms`` when none is."""
        if max_messages <= 0:
            return []
        nc, pull = await self._pull(queue)
        async with pull.lock, self._reachable():
            messages = await pull.take(nc, max_messages, timeout_ms / 1000)
        deliveries = []
        for msg in messages:
            attempts, published_at = delivered(msg)
            deliveries.append(Delivery(msg.data, attempts, msg, published_at))
        return deliveries

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Ack every delivery; returns once JetStream processed the acks."""
        messages: list[Msg] = [d.handle for d in deliveries if not d.handle.is_acked]
        if not messages:
            return
        await self._client()
        async with self._reachable():
            for msg in messages[:-1]:
                await msg.ack()
            # The server answers this one after it processed it, and a consumer processes
            # the acks of a connection in order: when it answers, the acked messages have
            # left a work-queue stream (and its bound), with one round trip for the batch.
            await messages[-1].ack_sync(timeout=self._timeout)

    async def _dead_letter(self, queue: str) -> str:
        if queue in self._specs:
            return self._specs[queue].dead_letter_name
        dead = self._dead_letters.get(queue)
        if dead is None:
            _, js = await self._client()
            async with self._reachable():
                info = await js.stream_info(stream_name(queue))
            try:
                recorded = orjson.loads(info.config.description or "{}").get("dead_letter")
            except (orjson.JSONDecodeError, AttributeError):
                recorded = None
            dead = self._dead_letters[queue] = recorded or f"{queue}.dead"
        return dead

    async def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Publish the dead letter (acked by JetStream), then ack the original."""
        dead = await self._dead_letter(queue)
        try:
            await self.publish(dead, [dead_letter_body(queue, delivery, reason)])
        except BackpressureError as error:
            raise UnavailableError(
                f"dead-letter queue {dead!r} is full; the delivery stays unacked and comes back"
            ) from error
        await self.ack(queue, [delivery])

    async def backlog(self, queue: str) -> int | None:
        """Messages the consumer has not delivered yet (its ``num_pending``)."""
        _, js = await self._client()
        async with self._reachable():
            try:
                info = await js.consumer_info(stream_name(_subject(queue)), CONSUMER)
            except NotFoundError:
                raise InvalidInputError(
                    f"queue {queue!r} is not declared; declare it first"
                ) from None
        return int(info.num_pending)

    async def close(self) -> None:
        """Close the connection; unacked deliveries come back after the redelivery delay."""
        nc, self._nc, self._js = self._nc, None, None
        self._pulls.clear()
        self._acks.cancel()
        if nc is not None and not nc.is_closed:
            await nc.close()

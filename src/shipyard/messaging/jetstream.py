"""JetStream's wire protocol as the NATS backend speaks it: publish acks, pull requests and
ack subjects, on a plain nats-py connection.

nats-py's JetStream API costs a future per published message (and 2.16's ``publish_async``
leaves the future of a refused message pending forever), a subscription per fetch, and a
``datetime`` per delivery; the backend (``shipyard.messaging.nats``) uses it for streams
and consumers only and the subjects below for the data path.

- Publishing: every message of a batch carries its own reply subject under one inbox
  (``PublishAcks``), so JetStream's answers — ``{"stream", "seq"}`` when stored, an error
  (``err_code`` 10077/10078 when the stream is full), or a ``503`` status when no stream
  takes the subject — are matched to their message by position (``read_ack``).
- Pulling: a request to ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with
  ``{"batch": N}`` and either ``"no_wait"`` or ``"expires"`` (nanoseconds) replies to its
  own subject under the queue's inbox (``Pull``). Messages arrive without a status; the
  request ends with one — ``404`` no messages, ``408`` expired, ``409`` ended by the
  server, ``503`` no such consumer (``100`` is a heartbeat). Its own reply subject tells a
  request's status from that of an earlier request given up on (server unreachable), whose
  late messages are kept for the next call.
- ``take`` asks for what is ready (a ``no_wait`` pull), and only when nothing is, waits in
  one pull of a single message that expires after the caller's timeout. A batch short of
  what was wanted then waits up to 5 ms more (within that timeout) for the rest:
  nats-server 2.10+ shows a consumer new messages a moment after acking their publish.
- Ack subjects: a delivered message's reply subject is
  ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``;
  ``delivered`` reads the delivery count and the stream's timestamp from it without
  nats-py's ``Metadata`` (whose ``datetime`` was a sixth of a consuming worker's time).
- Every wait notices a lost connection within ``CHECK_S``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api as js_api

from shipyard.errors import UnavailableError

CHECK_S = 0.25  # how often a wait looks whether the connection is still up
GATHER_S = 0.005  # how long a take that found some messages waits for more
STREAM_FULL = frozenset({10077, 10078})  # maximum messages / bytes exceeded
STREAM_IN_USE = 10058  # stream name already in use with a different configuration
SUBJECTS_OVERLAP = 10065  # another stream already takes a subject
_ACK_TOKENS = 9


def status(msg: Msg) -> str | None:
    """The status header of a JetStream control message (None on a message with data)."""
    return msg.headers.get("Status") if msg.headers else None


def delivered(msg: Msg) -> tuple[int, float]:
    """A delivered message's delivery count and stream time (seconds since the epoch)."""
    tokens = msg.reply.split(".") if msg.reply else []
    if len(tokens) == _ACK_TOKENS and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4]), int(tokens[7]) / 1e9
    metadata = msg.metadata  # the longer form, with a domain and an account hash
    return metadata.num_delivered, metadata.timestamp.timestamp()


class Ack(enum.Enum):
    """What JetStream answered to one published message."""

    STORED = "stored"
    FULL = "the stream is full"
    NO_STREAM = "no stream answered"
    MISSING = "no ack in time"
    REFUSED = "refused"


def read_ack(reply: Msg | None) -> tuple[Ack, str]:
    """What a publish ack says, with JetStream's description of a refusal."""
    if reply is None:
        return Ack.MISSING, Ack.MISSING.value
    if status(reply) == "503":  # no responders: no stream takes this subject
        return Ack.NO_STREAM, Ack.NO_STREAM.value
    if b'"error"' not in reply.data:  # {"stream": …, "seq": …}
        return Ack.STORED, ""
    answer = orjson.loads(reply.data)
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is None:
        return Ack.STORED, ""
    if error.get("err_code") in STREAM_FULL:
        return Ack.FULL, Ack.FULL.value
    return Ack.REFUSED, str(error.get("description", error))


class _Sent:
    """The acks of one published batch, by position; ``done`` when all came."""

    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.replies: list[Msg | None] = [None] * size
        self.waiting = size
        self.done = done


class PublishAcks:
    """Publishes batches on a connection and matches JetStream's acks to their messages."""

    def __init__(self) -> None:
        self._inbox = ""
        self._numbers = itertools.count()
        self._waiting: dict[str, tuple[_Sent, int]] = {}  # reply subject → batch, position

    async def listen(self, nc: Client) -> None:
        """Subscribe to the acks of this connection's publishes."""
        self._inbox = nc.new_inbox()
        await nc.subscribe(f"{self._inbox}.*", cb=self._arrived)

    async def _arrived(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject, None)
        if waiting is not None:
            sent, position = waiting
            sent.replies[position] = msg
            sent.waiting -= 1
            if not sent.waiting and not sent.done.done():
                sent.done.set_result(None)

    async def publish(
        self, nc: Client, subject: str, bodies: Sequence[bytes], timeout_s: float
    ) -> list[Msg | None]:
        """Send the batch at once; the ack of each message, None for those that did not
        come within ``timeout_s`` or before the connection was lost."""
        sent = _Sent(len(bodies), asyncio.get_running_loop().create_future())
        replies = [f"{self._inbox}.{next(self._numbers)}" for _ in bodies]
        try:
            for position, (body, reply) in enumerate(zip(bodies, replies, strict=True)):
                self._waiting[reply] = (sent, position)
                await nc.publish(subject, body, reply=reply)
            deadline = time.monotonic() + timeout_s
            while not sent.done.done() and nc.is_connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait([sent.done], timeout=min(CHECK_S, remaining))
        finally:
            for reply in replies:  # acks that never came
                self._waiting.pop(reply, None)
        return sent.replies

    def cancel(self) -> None:
        """Stop waiting for every ack (the connection is being closed)."""
        for sent, _ in self._waiting.values():
            sent.done.cancel()
        self._waiting.clear()


@dataclass
class Pull:
    """Pull requests to one durable consumer, and the messages they bring.

    ``server`` names the server in errors; ``answer_s`` is how long the server may take to
    end a request beyond its expiry before it counts as unreachable.
    """

    stream: str
    consumer: str
    server: str
    answer_s: float
    inbox: str = ""
    next_subject: str = field(init=False)  # where the requests go
    arrived: asyncio.Queue[Msg] = field(default_factory=asyncio.Queue)
    kept: deque[Msg] = field(default_factory=deque)
    numbers: Iterator[int] = field(default_factory=itertools.count)
    # One request at a time: concurrent ones would read each other's end-of-request status.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.next_subject = (
            f"{js_api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        )

    async def listen(self, nc: Client) -> None:
        """Subscribe to the replies of this pull's requests."""
        self.inbox = nc.new_inbox()
        await nc.subscribe(f"{self.inbox}.*", cb=self._arrived)

    async def _arrived(self, msg: Msg) -> None:
        self.arrived.put_nowait(msg)

    async def take(self, nc: Client, wanted: int, timeout_s: float) -> list[Msg]:
        """Up to ``wanted`` messages: what is ready, else the first within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        taken = self._kept(wanted)
        if len(taken) < wanted:
            taken += await self._request(nc, wanted - len(taken), None)
        if not taken and timeout_s > 0:
            taken = await self._request(nc, 1, timeout_s)
        gather = min(GATHER_S, deadline - time.monotonic())
        if taken and len(taken) < wanted and gather >= 0.001:
            # nats-server 2.10+ tells a consumer about stored messages a moment after it
            # acked their publish: a short wait takes them too, not a batch of one.
            taken += self._kept(wanted - len(taken))
            if len(taken) < wanted:
                taken += await self._request(nc, wanted - len(taken), gather)
        return taken

    def _kept(self, wanted: int) -> list[Msg]:
        """Messages of earlier requests that arrived after their call gave up on them."""
        while not self.arrived.empty():
            msg = self.arrived.get_nowait()
            if status(msg) is None:
                self.kept.append(msg)
        return [self.kept.popleft() for _ in range(min(wanted, len(self.kept)))]

    async def _request(self, nc: Client, batch: int, expires_s: float | None) -> list[Msg]:
        """One request: ``no_wait`` when ``expires_s`` is None, else a wait that expires."""
        reply = f"{self.inbox}.{next(self.numbers)}"
        request: dict[str, object] = {"batch": batch}
        if expires_s is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(expires_s * 1e9)
        await nc.publish(self.next_subject, orjson.dumps(request), reply=reply)
        # The server ends every request with a status by then, unless it is unreachable.
        deadline = time.monotonic() + (expires_s or 0) + self.answer_s
        taken: list[Msg] = []
        while len(taken) < batch:
            if self.arrived.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not nc.is_connected:
                    if taken:
                        return taken
                    raise UnavailableError(
                        f"NATS at {self.server} did not answer a pull from stream "
                        f"{self.stream!r} ({'timed out' if nc.is_connected else 'disconnected'})"
                        "; retry later"
                    )
                try:
                    msg = await asyncio.wait_for(self.arrived.get(), min(CHECK_S, remaining))
                except TimeoutError:
                    continue
            else:
                msg = self.arrived.get_nowait()
            code = status(msg)
            if code is None:
                taken.append(msg)
            elif msg.subject == reply and code != "100":
                if code == "503":
                    raise UnavailableError(
                        f"NATS at {self.server} has no consumer {self.consumer!r} on stream "
                        f"{self.stream!r} (JetStream restarting, or the stream was deleted); "
                        "retry later or declare the queue again"
                    )
                break  # 404 no messages, 408 expired, 409 ended by the server
        return taken

"""Users with several addresses of one service (two load balancers), against small asyncio
servers on 127.0.0.1 that can be killed: a user moves on when its address refuses or drops
the connection, sends the request again there, and the failovers are counted; an address
that answers, even with a 503, keeps its users; labels fail over too. A broker target closes
without cancelling its reader inside a broker call."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest

from shipyard.children import free_port
from shipyard.messaging.broker import Delivery
from shipyard.messaging.memory import MemoryBroker
from shipyard.traffic import targets
from shipyard.traffic.config import Protocol, TrafficConfig
from shipyard.traffic.connection import Endpoint
from shipyard.traffic.labels import Label, Sent
from shipyard.traffic.rows import Rows
from shipyard.traffic.targets import BrokerTarget, HttpFeedback, HttpTarget
from shipyard.traffic.users import LabelSource, Users

from .test_connection import read_request

ROWS = Rows(["a", "b"], np.arange(20, dtype=np.float64).reshape(10, 2), None)


@dataclass
class Replica:
    """An HTTP server answering every POST as the OIP route does (``status`` 200) or with
    an error status; ``kill`` drops every connection (RST) and stops listening, as a
    SIGKILLed process would."""

    status: int = 200
    port: int = 0
    answered: int = 0
    feedback: list[bytes] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Replica:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await read_request(reader)
                if request.startswith(b"POST /v1/feedback"):
                    self.feedback.append(request.split(b"\r\n\r\n", 1)[1])
                    body = b'{"accepted": 1}'
                else:
                    body = orjson.dumps(
                        {
                            "model_version": "1",
                            "outputs": [{"name": "id", "data": [f"{self.port}-{next(self._ids)}"]}],
                        }
                    )
                if self.status == 200:
                    self.answered += 1
                head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def kill(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self.kill()
            await self._server.wait_closed()


def target(urls: list[str], users: int, start: int = 0) -> HttpTarget:
    endpoints = [Endpoint.parse(url) for url in urls]
    return HttpTarget(
        endpoints, Protocol.OIP, "fraud", (ROWS, None), slots=users, timeout_s=5.0, start=start
    )


async def run_users(
    http: HttpTarget, config: TrafficConfig, during: Callable[[Users], Awaitable[None]]
) -> Users:
    users = Users(config.check(), http, (len(ROWS), None), LabelSource(None, None), None)
    try:
        await asyncio.wait_for(asyncio.gather(users.run(), during(users)), timeout=60)
    finally:
        await http.close()
    return users


async def nothing(users: Users) -> None:
    return None


def test_users_move_to_the_next_address_when_theirs_refuses_connections() -> None:
    async def main() -> tuple[Users, str]:
        backup = await Replica().start()
        try:
            dead = f"http://127.0.0.1:{free_port()}"
            http = target([dead, backup.url], users=4)
            return await run_users(http, TrafficConfig(users=4, requests=200), nothing), backup.url
        finally:
            await backup.close()

    users, backup = asyncio.run(main())
    stats = users.stats
    assert stats.errors == {}
    assert stats.succeeded == 200
    assert stats.failovers == 4  # each user once, on its first request, then it stays
    assert stats.addresses == {backup: 200}


def test_a_killed_address_loses_no_request_the_users_finish_on_the_next() -> None:
    async def main() -> tuple[Users, Replica, Replica]:
        primary, backup = await Replica().start(), await Replica().start()

        async def kill_midway(users: Users) -> None:
            for _ in range(2000):  # bounded: the users answer ~10 requests per ms here
                if users.stats.requests >= 300:
                    break
                await asyncio.sleep(0.001)
            primary.kill()

        try:
            http = target([primary.url, backup.url], users=8)
            users = await run_users(http, TrafficConfig(users=8, requests=1000), kill_midway)
            return users, primary, backup
        finally:
            await primary.close()
            await backup.close()

    users, primary, backup = asyncio.run(main())
    stats = users.stats
    assert stats.errors == {}
    assert stats.succeeded == 1000
    assert stats.failovers == 8  # every user was on the primary
    assert stats.addresses == {primary.url: primary.answered, backup.url: backup.answered}
    assert primary.answered >= 300 - 8
    assert backup.answered > 0


def test_every_address_down_fails_the_request_after_trying_each_once() -> None:
    async def main() -> Users:
        urls = [f"http://127.0.0.1:{port}" for port in (free_port(), free_port())]
        return await run_users(target(urls, users=2), TrafficConfig(users=2, requests=10), nothing)

    stats = asyncio.run(main()).stats
    assert stats.errors == {"connection refused": 10}
    assert stats.failovers == 10  # one move per request: each address tried once
    assert stats.succeeded == 0


def test_an_address_that_answers_503_keeps_its_users() -> None:
    async def main() -> Users:
        busy, backup = await Replica(status=503).start(), await Replica().start()
        try:
            http = target([busy.url, backup.url], users=2)
            return await run_users(http, TrafficConfig(users=2, requests=20), nothing)
        finally:
            await busy.close()
            await backup.close()

    stats = asyncio.run(main()).stats
    assert stats.errors == {"HTTP 503": 20}
    assert stats.failovers == 0


def test_users_start_on_the_address_the_check_found_answering() -> None:
    async def main() -> tuple[Users, str]:
        first, second = await Replica().start(), await Replica().start()
        try:
            http = target([first.url, second.url], users=2, start=1)
            return await run_users(http, TrafficConfig(users=2, requests=20), nothing), second.url
        finally:
            await first.close()
            await second.close()

    users, second = asyncio.run(main())
    assert users.stats.failovers == 0
    assert users.stats.addresses == {second: 20}


def test_labels_go_to_the_next_address_when_the_first_refuses() -> None:
    async def main() -> tuple[list[Sent], Replica]:
        backup = await Replica().start()
        dead = f"http://127.0.0.1:{free_port()}"
        try:
            async with (
                httpx.AsyncClient(base_url=dead, timeout=5) as first,
                httpx.AsyncClient(base_url=backup.url, timeout=5) as second,
            ):
                sink = HttpFeedback(first, "fraud", fallbacks=[second])
                sent = [await sink.send([Label(f"p-{i}", 1, 0.0)]) for i in range(3)]
            return list(sent), backup
        finally:
            await backup.close()

    sent, backup = asyncio.run(main())
    assert all(s.failure is None for s in sent)
    assert [orjson.loads(body)["feedback"][0]["id"] for body in backup.feedback] == [
        "p-0",
        "p-1",
        "p-2",
    ]


class WatchedBroker(MemoryBroker):
    """A memory broker that records a consume cancelled midway; ``stuck`` makes every
    consume wait until cancelled (a broker that stopped answering)."""

    def __init__(self, *, stuck: bool = False) -> None:
        super().__init__()
        self.stuck = stuck
        self.cancelled_consumes = 0
        self.closed = False

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        try:
            if self.stuck:
                await asyncio.Event().wait()
            return await super().consume(queue, max_messages, timeout_ms)
        except asyncio.CancelledError:
            self.cancelled_consumes += 1
            raise

    async def close(self) -> None:
        self.closed = True
        await super().close()


def test_closing_a_broker_target_lets_its_reader_finish_its_consume() -> None:
    """The reader is told to stop, not cancelled inside a broker call: redis-py's client can
    be left waiting for ever by a command cancelled midway (a test run hung so)."""
    broker = WatchedBroker()

    async def main() -> None:
        target = BrokerTarget(broker, (ROWS, None), queue="in", results="out", timeout_s=5)
        await target.start()
        await asyncio.sleep(0.05)  # the reader is inside a consume now
        await asyncio.wait_for(target.close(), 10)

    asyncio.run(main())
    assert broker.cancelled_consumes == 0
    assert broker.closed


def test_a_reader_stuck_in_a_broker_call_is_cancelled_after_the_close_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(targets, "CLOSE_WAIT_S", 0.05)
    broker = WatchedBroker(stuck=True)

    async def main() -> None:
        target = BrokerTarget(broker, (ROWS, None), queue="in", results="out", timeout_s=5)
        await target.start()
        await asyncio.sleep(0.01)
        await asyncio.wait_for(target.close(), 10)

    asyncio.run(main())
    assert broker.cancelled_consumes == 1
    assert broker.closed

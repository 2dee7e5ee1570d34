"""Keep-alive HTTP/1.1 connections for the users' requests: one per user, each request
written as pre-formatted bytes and its answer read by ``httptools`` (llhttp, the parser
uvicorn uses).

Why not httpx or aiohttp here: from one core, httpx's ``AsyncClient`` made ~140 requests per
CPU-second with 32 users on this machine and aiohttp ~3,100; the users must not be the
bottleneck of the server they measure (``benchmarks/README.md``, "Simulated users"). This
path makes ~15,000. Everything that is not a user's request (metadata, feedback) uses httpx.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from shipyard.errors import InvalidInputError


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens, read from its URL."""

    url: str
    host: str
    port: int
    tls: bool
    prefix: str
    """The URL's path, without its trailing slash, put before every route."""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """``http://HOST[:PORT][/PREFIX]`` or ``https://…``; ``InvalidInputError`` otherwise."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise InvalidInputError(
                f"--url must be http://HOST:PORT (or https://…), got {url!r}; "
                "e.g. http://127.0.0.1:8000"
            )
        tls = parts.scheme == "https"
        return cls(
            url=url.rstrip("/"),
            host=parts.hostname,
            port=port or (443 if tls else 80),
            tls=tls,
            prefix=parts.path.rstrip("/"),
        )

    def request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """A whole ``POST`` request to ``path``, ready to be written."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        lines = [f"POST {self.prefix}{path} HTTP/1.1", f"Host: {host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says nothing answers at an address any more (refused, reset, cut,
    never connected), as opposed to a server that answered late or with garbage: a client
    with several addresses of one service moves on to the next when it meets one of these.
    A connection not made in time is a ``TimeoutError`` with ``errno.ETIMEDOUT``, as the
    kernel's own; a late answer's has none."""
    if isinstance(error, TimeoutError):
        return error.errno == errno.ETIMEDOUT
    return isinstance(
        error,
        ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError | BrokenPipeError,
    )


class _Exchange(asyncio.Protocol):
    """One connection: a request goes out, its response is parsed as it comes in."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            # A plain ConnectionError: what the server sent is not an HTTP response.
            self._fail(ConnectionError(f"not an HTTP response: {error}"))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.chunks)
        self.chunks = []
        if not self.parser.should_keep_alive():
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, error: Exception) -> None:
        self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Connections:
    """A keep-alive connection per slot to one endpoint, opened on first use and again
    after the server closed it; ``exchange`` raises ``OSError`` when no response comes
    (``TimeoutError`` after ``timeout_s``; with ``errno.ETIMEDOUT`` when not even the
    connection was made in time)."""

    def __init__(self, endpoint: Endpoint, slots: int, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._open: list[_Exchange | None] = [None] * slots
        self._tls = ssl.create_default_context() if endpoint.tls else None

    async def exchange(self, slot: int, request: bytes) -> tuple[int, bytes]:
        """Write ``request`` on ``slot``'s connection; the response's status and body."""
        loop = asyncio.get_running_loop()
        exchange = self._open[slot]
        if exchange is None or exchange.closed:
            exchange = await self._connect(slot)
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        exchange.waiter = waiter
        assert exchange.transport is not None
        exchange.transport.write(request)
        # A timer, not wait_for: a fraction of the cost on the path every request takes.
        timer = loop.call_later(self.timeout_s, _expire, exchange, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def _connect(self, slot: int) -> _Exchange:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        connecting = loop.create_connection(
            _Exchange,
            endpoint.host,
            endpoint.port,
            ssl=self._tls,
            server_hostname=endpoint.host if self._tls else None,
        )
        try:
            _, exchange = await asyncio.wait_for(connecting, self.timeout_s)
        except TimeoutError:
            raise TimeoutError(
                errno.ETIMEDOUT, f"no connection within {self.timeout_s:g} s"
            ) from None
        self._open[slot] = exchange
        return exchange

    def close(self) -> None:
        """Close every connection."""
        for exchange in self._open:
            if exchange is not None:
                exchange.close()
        self._open = [None] * len(self._open)


def _expire(exchange: _Exchange, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    """No response in time: give up the connection (a late answer would be mistaken for
    the next request's)."""
    if not waiter.done():
        exchange.waiter = None
        exchange.close()
        waiter.set_exception(TimeoutError("no response in time"))

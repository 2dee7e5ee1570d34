"""The users' HTTP connections against a small asyncio server on 127.0.0.1: keep-alive,
a server that closes, chunked answers, no answer, no server, bytes that are not HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shipyard.children import free_port
from shipyard.errors import InvalidInputError
from shipyard.traffic.connection import Connections, Endpoint

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def with_server(handler: Handler, test: Callable[[Endpoint], Awaitable[None]]) -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await test(Endpoint.parse(f"http://127.0.0.1:{port}/prefix/"))
    finally:
        server.close()


def test_requests_share_one_keep_alive_connection_and_reconnect_after_a_close() -> None:
    accepted: list[int] = []
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        for number in range(100):
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            if number == 2:  # the third answer closes the connection
                writer.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
                await writer.drain()
                break
            writer.write(OK)
            await writer.drain()
        writer.close()

    async def test(endpoint: Endpoint) -> None:
        connections = Connections(endpoint, slots=1, timeout_s=5)
        request = endpoint.request("/route", b'{"a":1}', {"Content-Type": "application/json"})
        for _ in range(5):
            assert await connections.exchange(0, request) == (200, b"{}")
        connections.close()

    asyncio.run(with_server(handler, test))
    assert len(accepted) == 2
    assert seen[0].startswith(b"POST /prefix/route HTTP/1.1\r\nHost: 127.0.0.1:")
    assert seen[0].endswith(b'Content-Length: 7\r\n\r\n{"a":1}')


def test_a_chunked_answer_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
        )
        await writer.drain()

    async def test(endpoint: Endpoint) -> None:
        connections = Connections(endpoint, slots=1, timeout_s=5)
        assert await connections.exchange(0, endpoint.request("/", b"", {})) == (201, b'{"a":1}')
        connections.close()

    asyncio.run(with_server(handler, test))


def test_no_answer_times_out_and_bad_bytes_are_refused() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client gives up and closes

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async def times_out(endpoint: Endpoint) -> None:
        with pytest.raises(TimeoutError):
            await Connections(endpoint, 1, timeout_s=0.2).exchange(
                0, endpoint.request("/", b"", {})
            )

    async def refused(endpoint: Endpoint) -> None:
        with pytest.raises(ConnectionError, match="not an HTTP response"):
            await Connections(endpoint, 1, timeout_s=5).exchange(0, endpoint.request("/", b"", {}))

    asyncio.run(with_server(silent, times_out))
    asyncio.run(with_server(garbage, refused))


def test_no_server_is_connection_refused() -> None:
    endpoint = Endpoint.parse(f"http://127.0.0.1:{free_port()}")

    async def test() -> None:
        with pytest.raises(ConnectionRefusedError):
            await Connections(endpoint, 1, timeout_s=5).exchange(0, endpoint.request("/", b"", {}))

    asyncio.run(test())


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h/", "http://", "http://h:notaport"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(InvalidInputError, match="--url must be http://HOST:PORT"):
        Endpoint.parse(url)

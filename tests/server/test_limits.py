"""``BodySizeLimit`` on its own, around a bare ASGI app with no error handling of its own."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from shipyard.server.limits import BodySizeLimit

LIMIT = 100


async def echo_size(scope: Scope, receive: Receive, send: Send) -> None:
    body = await Request(scope, receive).body()
    await Response(str(len(body)))(scope, receive, send)


def client() -> TestClient:
    return TestClient(BodySizeLimit(echo_size, max_bytes=LIMIT))


def chunks(count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield b"x" * 10


def test_a_body_within_the_limit_passes() -> None:
    response = client().post("/", content=b"x" * LIMIT)
    assert (response.status_code, response.text) == (200, str(LIMIT))
    assert client().post("/", content=chunks(10)).text == str(LIMIT)


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    response = client().post("/", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT}; send fewer "
        "rows per request or raise SHIPYARD_MAX_BODY_BYTES"
    }


def test_a_streamed_body_over_the_limit_is_refused_once_it_passes() -> None:
    response = client().post("/", content=chunks(11))
    assert response.status_code == 413
    assert response.json()["error"].startswith("request body of 110 bytes exceeds the limit")

"""The inference routes, answered ahead of Starlette's middleware and router.

A one-row prediction is a few dozen microseconds of work; Starlette's stack around it (error
middleware, metrics and body-limit middleware, exception middleware, FastAPI's exit stack,
the router's scan, the route's wrappers) would cost as much again. ``ShipyardApp`` answers
``POST`` to the inference routes itself, doing what that stack does for them:

- the same endpoints, given a Starlette ``Request`` with the path parameters (one that
  reads its body in one go, ``ReadRequest``, unless the route streams it);
- the request metrics of ``MetricsMiddleware`` (in flight, count by route and status,
  latency), under the same route templates;
- the body limit of ``BodySizeLimit``: a declared ``Content-Length`` over the limit is
  refused before anything is read, a body without one is counted as it streams in;
- errors through the app's own exception handlers (``{"error": ...}`` with the status the
  error names); an unforeseen exception answers 500 ``Internal Server Error`` and goes on
  to the server, which logs it, as Starlette's ``ServerErrorMiddleware`` does.

Anything else (another method, another path, a lifespan or websocket scope) goes through
the whole stack, as do the inference routes when they need a role (protected inference):
FastAPI's dependencies check it there.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from shipyard.server import metrics
from shipyard.server.limits import check_declared, counting

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class ReadRequest(Request):
    """A request that reads its body whole, in one loop over ``receive``, when the
    endpoint first asks for it: Starlette's own reading (an async generator per request)
    cost 2 µs more, a one-row prediction's 4 %. Its body is only ever read whole."""

    _read: bytes | None = None

    async def body(self) -> bytes:
        """The whole body."""
        if self._read is None:
            self._read = await read_body(self.receive)
        return self._read

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """The body, as one chunk."""
        yield await self.body()
        yield b""


class HotRoute:
    """A path template (Starlette's syntax, string parameters) and its endpoint.

    ``buffered``: the endpoint reads the body whole (``ReadRequest``); a route that may
    stream it (a multipart upload) says False."""

    def __init__(self, template: str, endpoint: Endpoint, *, buffered: bool = True) -> None:
        self.template = template
        self.endpoint = endpoint
        self.request_class = ReadRequest if buffered else Request
        self.regex: re.Pattern[str] = compile_path(template)[0]


async def read_body(receive: Receive) -> bytes:
    """A request's whole body; ``ClientDisconnect`` if the client went away first."""
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ShipyardApp(FastAPI):
    """FastAPI, with the ``hot`` routes answered before the middleware stack."""

    hot: Sequence[HotRoute] = ()
    max_body_bytes: int = 0

    def serve_hot(self, routes: Sequence[HotRoute], *, max_body_bytes: int) -> None:
        """Answer these routes' ``POST`` requests ahead of the stack."""
        self.hot = routes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Find a hot route for an HTTP ``POST``; anything else goes through the stack."""
        if self.hot and scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):  # as Starlette's router sees the path
                path = path[len(root) :]
            for route in self.hot:
                match = route.regex.match(path)
                if match is not None:
                    scope["app"] = self
                    scope["path_params"] = match.groupdict()
                    await self._answer(route, scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _answer(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500
        started = False
        tally = metrics.TALLY
        tally.begin()
        try:
            limit = self.max_body_bytes
            request = route.request_class(scope, receive)
            try:
                if not check_declared(scope, limit):  # else the server holds it to its length
                    request = route.request_class(scope, counting(receive, limit))
                response = await route.endpoint(request)
            except Exception as error:
                handler = self._handler(error)
                if handler is None:
                    raise
                answer = handler(request, error)
                response = await answer if inspect.isawaitable(answer) else answer
            status, started = response.status_code, True
            await response(scope, receive, send)
        except Exception:
            if not started:  # as ServerErrorMiddleware answers it; the server logs it
                status = 500
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
            raise
        finally:
            tally.end(route.template, status, time.perf_counter() - start)

    def _handler(self, error: Exception) -> Handler | None:
        """The app's exception handler for this error, by its class's order of bases."""
        handlers = self.exception_handlers
        for cls in type(error).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None

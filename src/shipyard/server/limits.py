"""Refuses request bodies over the configured size with 413, before they are read whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.errors import BodyTooLargeError, PayloadTooLargeError
from shipyard.server.responses import error_response


def too_large(size: int, max_bytes: int) -> BodyTooLargeError:
    """The 413 of a body of ``size`` bytes."""
    return BodyTooLargeError(
        f"request body of {size} bytes exceeds the limit of {max_bytes}; "
        "send fewer rows per request or raise SHIPYARD_MAX_BODY_BYTES"
    )


def check_declared(scope: Scope, max_bytes: int) -> bool:
    """Whether the request declares its ``Content-Length`` (the server then holds the body
    to it); raises ``BodyTooLargeError`` when the declared length is over the limit."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > max_bytes:
                raise too_large(int(value), max_bytes)
            return True
    return False


def counting(receive: Receive, max_bytes: int) -> Receive:
    """``receive``, raising ``BodyTooLargeError`` once the body's bytes pass the limit."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise too_large(seen, max_bytes)
        return message

    return counted


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length, then counts streamed bytes."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_declared(scope, self.max_bytes)
        except BodyTooLargeError as error:
            await self._refuse(scope, receive, send, error)
            return
        try:
            await self.app(scope, counting(receive, self.max_bytes), send)
        except BodyTooLargeError as error:
            # The app's ShipyardError handler usually answers it; an app without one gets the
            # same answer here. Only the body's size is refused here: anything else propagates.
            await self._refuse(scope, receive, send, error)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, error: PayloadTooLargeError
    ) -> None:
        await error_response(str(error), error.status_code)(scope, receive, send)

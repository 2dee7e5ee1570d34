"""Refuses request bodies over the configured size with 413, before they are read whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.errors import PayloadTooLargeError
from shipyard.server.responses import error_response


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length, then counts streamed bytes."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send, self._too_large(int(value)))
                    return
                break
        seen = 0
        refused: PayloadTooLargeError | None = None

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = self._too_large(seen)
                    raise refused
            return message

        try:
            await self.app(scope, counting_receive, send)
        except PayloadTooLargeError as error:
            # The app's ShipyardError handler usually answers it; an app without one gets the
            # same answer here. Only our own refusal is answered: anything else propagates.
            if error is not refused:
                raise
            await self._refuse(scope, receive, send, error)

    def _too_large(self, size: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body of {size} bytes exceeds the limit of {self.max_bytes}; "
            "send fewer rows per request or raise SHIPYARD_MAX_BODY_BYTES"
        )

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, error: PayloadTooLargeError
    ) -> None:
        await error_response(str(error), error.status_code)(scope, receive, send)

"""Fast JSON responses (orjson, numpy arrays serialised natively), error bodies, and the
request checks every inference route shares."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from shipyard.errors import InvalidInputError, UnsupportedMediaTypeError
from shipyard.registry import ModelRef

JSON = "application/json"
MAX_VERSION = 2**63 - 1  # the registry stores version numbers as signed 64-bit integers


def json_response(content: Any, status_code: int = 200) -> Response:
    """Serialise with orjson; numpy arrays and scalars are written without conversion."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type=JSON)


class ErrorBody(BaseModel):
    """The error shape of every route, as the OpenAPI document shows it."""

    error: str


def error_response(message: str, status_code: int) -> Response:
    """The one error shape of every route: ``{"error": "..."}``."""
    return json_response({"error": message}, status_code)


def header(request: Request, name: bytes) -> str | None:
    """The request's first header ``name`` (lower case), read from the raw headers:
    ``request.headers.get`` builds Starlette's multi-dict first, 1 µs an inference request."""
    for key, value in request.scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def require_media_type(content_type: str | None, allowed: tuple[str, ...]) -> str:
    """The request's media type if the route reads it; 415 naming the accepted ones if not."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in allowed:
        raise UnsupportedMediaTypeError(
            f"content type {media or '(none)'!r} is not accepted here; send {' or '.join(allowed)}"
        )
    return media


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; malformed JSON is a 400 that quotes the parser."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"malformed JSON: {error}") from error


@functools.lru_cache(maxsize=4096)  # a bad name raises, and is not kept
def model_ref(model: str, version: str | None = None) -> str:
    """The served reference a URL names, checked before it reaches the registry (400 if bad);
    the answers for the names seen lately are kept, as every request names one."""
    if version is not None:
        if not (version.isascii() and version.isdigit()):
            raise InvalidInputError(f"version must be a number, got {version!r}")
        model = f"{model.split('@')[0]}:{version.lstrip('0') or '0'}"
    ModelRef.parse(model)  # refuses bad names and versions outside 1..MAX_VERSION
    return model

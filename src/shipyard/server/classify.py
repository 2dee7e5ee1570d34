"""Classify one image: ``POST /v1/models/{name}:classify``.

The image comes as a multipart upload (field ``file``: ``curl -F file=@digit.png``), as the
raw body typed ``image/png`` or ``image/jpeg``, or as JSON naming it: ``{"url": …}`` (fetched
from an allowed host, see ``shipyard.inference.images``) or ``{"image_base64": …}``; JSON may
carry an ``id`` for the prediction. What the bytes are is sniffed from them, never taken from
a header. The answer names the model version, the ``label`` (the most probable class) and the
``top_k`` classes (``?top_k=``, default 5, at most the model's classes) with probabilities.
Each image is one request to the model's batcher, so concurrent requests are batched.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from shipyard.data.images import ImageFormat
from shipyard.errors import InvalidInputError, SchemaError, UnsupportedMediaTypeError
from shipyard.inference.images import base64_image, decode_image, ranked_classes
from shipyard.monitoring.ids import check_id, new_ids
from shipyard.server.responses import json_response, model_ref, parse_json
from shipyard.server.state import ServerState, state_of
from shipyard.server.uploads import MULTIPART, form_of, media_type

IMAGE_TYPES = ("image/png", "image/jpeg")
JSON = "application/json"
FIELD = "file"
DEFAULT_TOP_K = 5
MAX_TOP_K = 1000

CLASSIFY_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
            "description": "how many of the most probable classes to answer",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string", "format": "uri"},
                        "image_base64": {"type": "string"},
                        "id": {"type": "string"},
                    },
                },
                "example": {"url": "https://images.example.com/digit.png"},
            },
        },
    },
}

router = APIRouter(prefix="/v1", tags=["predict"])


@router.post("/models/{name}:classify", openapi_extra=CLASSIFY_DOC)
async def classify(request: Request, name: str) -> Response:
    """Classify one PNG or JPEG image with an image model: its label and top-k classes."""
    started = time.perf_counter()
    query = request.scope["query_string"]  # most requests have none: no parsing then
    top_k = _top_k(request.query_params.get("top_k")) if query else DEFAULT_TOP_K
    ref = model_ref(name)
    state = state_of(request)
    loaded = await state.service.model(ref)
    image_format(loaded.layout.image, loaded.info.output_schema, name)
    data, given = await _image_bytes(request, state)
    image = await decode_image(data, max_pixels=state.settings.image_max_pixels)
    result = await state.service.infer(
        ref,
        lambda layout: layout.from_images([image]),
        lambda rows: [given] if given is not None else new_ids(rows),
        started,
    )
    ids = result.ids
    ranked = ranked_classes(result.outputs, result.classes, top_k)[0]
    return json_response(
        {
            "model": result.model,
            "version": result.version,
            "id": ids[0],
            "label": result.outputs["label"].tolist()[0],
            "top_k": ranked,
        }
    )


def image_format(fmt: ImageFormat | None, output_schema: dict[str, Any], name: str) -> ImageFormat:
    """The image format of a model that classifies images; ``SchemaError`` (422) saying
    what the model is otherwise."""
    if fmt is None:
        raise SchemaError(
            f"{name} is not an image model: its manifest records no image format "
            f'(input_schema["image"]); send its features to /v1/models/{name}:predict instead, '
            "or classify with a model trained on images"
        )
    if output_schema.get("task") != "classification":
        raise SchemaError(f"{name} is not a classifier; it has no classes to answer")
    return fmt


def _top_k(text: str | None) -> int:
    if text is None:
        return DEFAULT_TOP_K
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_TOP_K:
        raise InvalidInputError(f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {text!r}")
    return int(text)


async def _image_bytes(request: Request, state: ServerState) -> tuple[bytes, str | None]:
    """The image's bytes, however they were sent, and the prediction id JSON gave."""
    media = media_type(request.headers.get("content-type"))
    if media in IMAGE_TYPES:
        return await request.body(), None
    if media == MULTIPART:
        async with form_of(request) as form:
            part = form.get(FIELD)
            sent = ", ".join(repr(k) for k in form) or "none"
            if isinstance(part, UploadFile):
                return await part.read(), None
        what = "is text, not a file" if part is not None else f"is missing (fields sent: {sent})"
        raise InvalidInputError(
            f"multipart field {FIELD!r} {what}; send the image as -F '{FIELD}=@digit.png'"
        )
    if media == JSON:
        payload = parse_json(await request.body())
        if not isinstance(payload, dict) or len({"url", "image_base64"} & payload.keys()) != 1:
            raise InvalidInputError(
                'send {"url": "https://…/image.png"} or {"image_base64": "…"} (one of them)'
            )
        given = None if payload.get("id") is None else check_id(payload["id"], "the request")
        if "image_base64" in payload:
            return base64_image(payload["image_base64"], "`image_base64`"), given
        url = payload["url"]
        if not isinstance(url, str):
            raise InvalidInputError("`url` must be a string: the image's http or https URL")
        return await state.fetcher.fetch(url), given
    raise UnsupportedMediaTypeError(
        f"content type {media or '(none)'!r} is not accepted here; send the image as "
        f"{MULTIPART} (field {FIELD!r}), as the body typed image/png or image/jpeg, or JSON "
        '{"url": …}'
    )


async def classify_endpoint(request: Request) -> Response:
    """``classify`` as a plain Starlette endpoint (no dependency solving); see ``app.py``."""
    return await classify(request, request.path_params["name"])

"""Open Inference Protocol (KServe V2) REST routes over the inference core."""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from shipyard import __version__
from shipyard.data.images import sniff
from shipyard.errors import InvalidInputError, SchemaError, ShipyardError
from shipyard.inference.formats import INPUT_NAME
from shipyard.inference.images import base64_image, decode_image
from shipyard.inference.service import LoadedModel
from shipyard.server.classify import image_format
from shipyard.server.responses import (
    header,
    json_response,
    model_ref,
    require_media_type,
)
from shipyard.server.state import ServerState, state_of
from shipyard.server.tensors import (
    BYTES,
    HEADER_LENGTH,
    InferRequest,
    decode_request,
    encode_response,
    row_ids,
)

IMAGE_INPUT = "image"
"""The input an image model's metadata names for its images (any name is accepted)."""
ID_OUTPUT = "id"
"""The output tensor (BYTES, one per row) that names each row's prediction id."""

TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": ["FP32", "FP64", "INT64", "INT32", "BOOL", "BYTES"],
        },
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "minItems": 1, "items": TENSOR_SCHEMA},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
MEDIA_TYPES = ("application/json", "application/octet-stream", "")

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
health = APIRouter(prefix="/v2", tags=["open inference protocol"])  # open even when guarded


@health.get("/health/live")
async def live() -> Response:
    """The process is up."""
    return json_response({"live": True})


@health.get("/health/ready")
async def ready(request: Request) -> Response:
    """Every model named at start is loaded."""
    if state_of(request).ready:
        return json_response({"ready": True})
    return json_response({"ready": False}, 503)


@health.get("")
async def server_metadata() -> Response:
    """Server name, version and protocol extensions."""
    return json_response(
        {"name": "shipyard", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


def _metadata(loaded: LoadedModel, model: str) -> dict[str, Any]:
    info = loaded.info
    outputs = []
    for output in info.output_schema.get("outputs", []):
        datatype = {"float32": "FP32", "int64": "INT64", "string": "BYTES"}[output["dtype"]]
        outputs.append({"name": output["name"], "datatype": datatype, "shape": [-1]})
        if output["name"] == "probabilities":
            outputs[-1]["shape"] = [-1, len(info.output_schema.get("classes", []))]
    outputs.append({"name": ID_OUTPUT, "datatype": "BYTES", "shape": [-1]})
    inputs: list[dict[str, Any]] = [
        {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, loaded.layout.width]}
    ]
    if loaded.layout.image is not None:  # or the image files themselves
        image = {"image": loaded.layout.image.model_dump()}
        inputs.append({"name": IMAGE_INPUT, "datatype": BYTES, "shape": [-1], "parameters": image})
    return {
        "name": model,
        "versions": [str(info.version)],
        "platform": {"onnx": "onnxruntime_onnx", "skops": "scikit-learn_skops"}.get(
            info.format, info.format
        ),
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "version": info.version,
            "aliases": info.aliases,
            "features": loaded.layout.names,
            "manifest_sha256": info.manifest_digest,
        },
    }


@router.get("/models/{model}")
async def model_metadata(request: Request, model: str) -> Response:
    """Inputs, outputs and the version that serves this model."""
    return await version_metadata(request, model, None)


@router.get("/models/{model}/versions/{version}")
async def version_metadata(request: Request, model: str, version: str | None) -> Response:
    """Inputs and outputs of one version."""
    loaded = await state_of(request).service.model(model_ref(model, version))
    return json_response(_metadata(loaded, model))


@router.get("/models/{model}/ready")
async def model_ready(request: Request, model: str) -> Response:
    """Whether the model is loaded and verified (loading it if it is not yet)."""
    return await version_ready(request, model, None)


@router.get("/models/{model}/versions/{version}/ready")
async def version_ready(request: Request, model: str, version: str | None) -> Response:
    """Whether this version is loaded and verified."""
    ref = model_ref(model, version)
    try:
        await state_of(request).service.model(ref)
    except ShipyardError as error:
        if error.status_code < 500:  # the caller's mistake (unknown model, bad name), not ours
            raise
        return json_response({"name": model, "ready": False}, 503)
    return json_response({"name": model, "ready": True})


@router.post("/models/{model}/infer", openapi_extra=INFER_BODY)
async def infer(request: Request, model: str) -> Response:
    """Predict a batch of rows sent as tensors (JSON or the binary tensor extension)."""
    return await version_infer(request, model, None)


@router.post("/models/{model}/versions/{version}/infer", openapi_extra=INFER_BODY)
async def version_infer(request: Request, model: str, version: str | None) -> Response:
    """Predict with one version.

    Each row's prediction id comes back in the BYTES output ``id``: the request's ``id`` for
    a one-row request, ``{id}:{row}`` for several, new UUIDv7s when the request has none."""
    started = time.perf_counter()
    require_media_type(header(request, b"content-type"), MEDIA_TYPES)
    ref = model_ref(model, version)
    body = await request.body()
    decoded = decode_request(body, header(request, HEADER_LENGTH))
    state = state_of(request)
    ids = functools.partial(row_ids, decoded.id)
    if any(array.dtype.kind == "O" for array in decoded.inputs.values()):
        images = await _images(state, ref, model, decoded)
        result = await state.service.infer(
            ref, lambda layout: layout.from_images(images), ids, started
        )
    else:
        result = await state.service.infer(
            ref,
            lambda layout: layout.from_named(decoded.inputs, INPUT_NAME, finite=decoded.finite),
            ids,
            started,
        )
    outputs = {**result.outputs, ID_OUTPUT: np.array(result.ids, dtype=object)}
    body, header_length = encode_response(model, result.version, decoded, outputs)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


async def _images(state: ServerState, ref: str, model: str, decoded: InferRequest) -> list[Any]:
    """The decoded images of a request whose input is ``BYTES``, for an image model: each
    element a PNG or JPEG file, raw (binary tensors) or base64 (JSON strings)."""
    loaded = await state.service.model(ref)
    names = ", ".join(decoded.inputs)
    if loaded.layout.image is None:
        raise SchemaError(
            f"{model} is not an image model, so it takes no BYTES input ({names}); send its "
            f"features as FP32 input {INPUT_NAME!r} of shape [rows, {loaded.layout.width}]"
        )
    image_format(loaded.layout.image, loaded.info.output_schema, model)
    if len(decoded.inputs) != 1:
        raise InvalidInputError(
            f"an image model takes one BYTES input holding the images; got {names}"
        )
    (elements,) = decoded.inputs.values()
    max_pixels = state.settings.image_max_pixels
    images = []
    for position, element in enumerate(elements.ravel().tolist()):
        what = f"image {position}"
        data = element if isinstance(element, bytes) and sniff(element) else None
        data = data or base64_image(element, f"{what} (BYTES: a PNG or JPEG, base64 in JSON)")
        try:
            images.append(await decode_image(data, max_pixels=max_pixels))
        except InvalidInputError as error:  # 400, 413, 415: which image it was
            raise type(error)(f"{what}: {error}") from error
    return images


async def infer_endpoint(request: Request) -> Response:
    """``infer`` as a plain Starlette endpoint (no dependency solving); see ``app.py``."""
    params = request.path_params
    return await version_infer(request, params["model"], params.get("version"))

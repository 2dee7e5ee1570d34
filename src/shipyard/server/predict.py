"""The plain JSON route for people with curl: ``POST /v1/models/{name}:predict``."""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from shipyard.errors import InvalidInputError
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import Features
from shipyard.monitoring.ids import check_id
from shipyard.server.mlflow import fill_ids, records
from shipyard.server.responses import (
    header,
    json_response,
    model_ref,
    parse_json,
    require_media_type,
)
from shipyard.server.state import state_of

PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "oneOf": [
                        {
                            "required": ["instances"],
                            "properties": {
                                "instances": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "object"},
                                }
                            },
                        },
                        {
                            "required": ["inputs"],
                            "properties": {
                                "inputs": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "array", "items": {"type": "number"}},
                                }
                            },
                        },
                    ],
                },
                "example": {"instances": [{"V1": -1.2, "Amount": 12.5, "…": 0}]},
            }
        },
    }
}

router = APIRouter(prefix="/v1", tags=["predict"])


@router.post("/models/{name}:predict", openapi_extra=PREDICT_BODY)
async def predict(request: Request, name: str) -> Response:
    """Predict ``{"instances": [{feature: value}, …]}`` or ``{"inputs": [[…], …]}``.

    An instance may carry an ``id`` (a string of at most 200 characters; not a feature);
    the server assigns one (UUIDv7) to every other row. Each prediction names its ``id``."""
    started = time.perf_counter()
    require_media_type(header(request, b"content-type"), ("application/json",))
    ref = model_ref(name)
    payload = parse_json(await request.body())
    given = _take_ids(payload)
    state = state_of(request)
    result = await state.service.infer(
        ref, lambda layout: _rows(payload, layout), functools.partial(fill_ids, given), started
    )
    ids = result.ids
    return json_response(
        {
            "model": result.model,
            "version": result.version,
            "feature_names": result.layout.names,
            "predictions": [
                {"id": i, **row} for i, row in zip(ids, records(result.outputs), strict=True)
            ],
        }
    )


def _take_ids(payload: Any) -> list[str | None] | None:
    """Remove the ``id`` of each instance (checked) and return them, None where a row has
    none; None when no instance has one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        return None
    instances: list[Any] = payload["instances"]
    if not any(isinstance(r, dict) and "id" in r for r in instances):
        return None
    return [
        check_id(r.pop("id"), f"instances[{row}]") if isinstance(r, dict) and "id" in r else None
        for row, r in enumerate(instances)
    ]


def _rows(payload: Any, layout: FeatureLayout) -> Features:
    """The rows of ``{"instances": [...]}`` or ``{"inputs": [[...]]}`` in ``layout``'s order."""
    if isinstance(payload, dict) and "instances" in payload:
        return layout.from_records(payload["instances"])
    if isinstance(payload, dict) and "inputs" in payload:
        return layout.from_matrix(payload["inputs"])
    raise InvalidInputError(
        'send {"instances": [{feature: value}, …]} or {"inputs": [[values in feature order]]}'
    )


async def predict_endpoint(request: Request) -> Response:
    """``predict`` as a plain Starlette endpoint (no dependency solving); see ``app.py``."""
    return await predict(request, request.path_params["name"])

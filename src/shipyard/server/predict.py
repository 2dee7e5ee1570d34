"""The plain JSON route for people with curl: ``POST /v1/models/{name}:predict``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from shipyard.errors import InvalidInputError
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import Features
from shipyard.server.mlflow import records
from shipyard.server.responses import (
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
    """Predict ``{"instances": [{feature: value}, …]}`` or ``{"inputs": [[…], …]}``."""
    require_media_type(request.headers.get("content-type"), ("application/json",))
    ref = model_ref(name)
    payload = parse_json(await request.body())
    result = await state_of(request).service.infer(ref, lambda layout: _rows(payload, layout))
    return json_response(
        {
            "model": result.model,
            "version": result.version,
            "feature_names": result.layout.names,
            "predictions": records(result.outputs),
        }
    )


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

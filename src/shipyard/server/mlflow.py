"""MLflow scoring protocol: ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``.

``/invocations`` serves the server's default model (the first of ``--models``). It reads
``dataframe_split``, ``dataframe_records``, ``instances`` and ``inputs`` JSON, or CSV with a
header row, and answers ``{"predictions": [{output: value, …}, …]}``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from shipyard import __version__
from shipyard.errors import InvalidInputError, NotFoundError
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import Features, Outputs
from shipyard.server.responses import (
    error_response,
    json_response,
    parse_json,
    require_media_type,
)
from shipyard.server.state import state_of

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
INVOCATIONS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "required": ["columns", "data"],
                            "properties": {
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "data": {"type": "array", "items": {"type": "array"}},
                            },
                        },
                        "dataframe_records": {"type": "array", "items": {"type": "object"}},
                        "instances": {"type": "array"},
                        "inputs": {"type": ["array", "object"]},
                    },
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}

router = APIRouter(tags=["mlflow scoring"])
health = APIRouter(tags=["mlflow scoring"])  # open even when inference is guarded


@health.get("/ping", responses={503: {"description": "Not ready to score /invocations"}})
async def ping(request: Request) -> Response:
    """Ready to score ``/invocations``, as MLflow's scoring server means it: 503 with the
    reason while there is no default model (``--models``) or it is still loading."""
    state = state_of(request)
    if state.default_model is None:
        return error_response(
            "no default model for /invocations; start the server with --models NAME", 503
        )
    if not state.ready:
        return error_response(f"loading {state.default_model}; try again shortly", 503)
    return PlainTextResponse("\n")


@health.get("/health")
async def health_check() -> Response:
    """Liveness: the process answers."""
    return PlainTextResponse("\n")


@health.get("/version")
async def version() -> Response:
    """The server's version."""
    return PlainTextResponse(__version__)


def features_from_mlflow(payload: Any, layout: FeatureLayout) -> Features:
    """The four MLflow JSON input formats as a feature matrix."""
    if not isinstance(payload, dict) or len(payload.keys() & set(FORMATS)) != 1:
        raise InvalidInputError(
            f"the body must be a JSON object with exactly one of {', '.join(FORMATS)}"
        )
    key = next(k for k in FORMATS if k in payload)
    value = payload[key]
    if key == "dataframe_split":
        if not isinstance(value, dict):
            raise InvalidInputError('dataframe_split must be {"columns": [...], "data": [[...]]}')
        return layout.from_columns(value.get("columns"), value.get("data"))
    if key == "dataframe_records":
        return layout.from_records(value)
    if isinstance(value, dict):  # "inputs": {"feature": [values…], …}
        columns = list(value)
        try:
            rows = np.asarray([value[c] for c in columns], dtype=object).T.tolist()
        except ValueError as error:
            raise InvalidInputError(
                f"{key}: every feature needs the same number of values"
            ) from error
        return layout.from_columns(columns, rows)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return layout.from_records(value)
    return layout.from_matrix(value)


def features_from_csv(body: bytes, layout: FeatureLayout) -> Features:
    """CSV with a header row naming the features."""
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError) as error:
        raise InvalidInputError(f"cannot read the CSV body: {error}") from error
    return layout.from_columns([str(c) for c in frame.columns], frame.to_numpy().tolist())


def records(outputs: Outputs) -> list[dict[str, Any]]:
    """Per-row objects of every output (class probabilities as lists)."""
    names = list(outputs)
    columns = [outputs[n].tolist() for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


@router.post("/invocations", openapi_extra=INVOCATIONS_BODY)
async def invocations(request: Request) -> Response:
    """Score rows with the server's default model."""
    state = state_of(request)
    if state.default_model is None:
        raise NotFoundError("this server has no default model; start it with --models NAME")
    media = require_media_type(
        request.headers.get("content-type"), ("application/json", "text/csv")
    )
    body = await request.body()
    if media == "text/csv":
        result = await state.service.infer(
            state.default_model, lambda layout: features_from_csv(body, layout)
        )
    else:
        payload = parse_json(body)
        result = await state.service.infer(
            state.default_model, lambda layout: features_from_mlflow(payload, layout)
        )
    return json_response({"predictions": records(result.outputs)})

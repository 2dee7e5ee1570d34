"""MLflow scoring protocol: ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``.

``/invocations`` serves the server's default model (the first of ``--models``). It reads
``dataframe_split``, ``dataframe_records``, ``instances`` and ``inputs`` JSON, or CSV with a
header row, and answers ``{"predictions": [{output: value, …}, …], "ids": [...], "model": NAME,
"version": N}``: a column (or record field) named ``id`` is each row's prediction id, not a
feature; rows without one get a new UUIDv7; ``version`` is the one that answered (the alias
may move between two requests). MLflow's clients read ``predictions`` and ignore the rest.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from shipyard import __version__
from shipyard.errors import InvalidInputError, NotFoundError
from shipyard.inference.inputs import FeatureLayout, PlainNumber
from shipyard.inference.predictor import Features, Outputs
from shipyard.monitoring.ids import check_id, new_ids
from shipyard.server.responses import (
    error_response,
    header,
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


class _Split(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    columns: list[str]
    data: list[list[PlainNumber]]


class _PlainSplit(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    dataframe_split: _Split


_decode_split = msgspec.json.Decoder(_PlainSplit).decode


def plain_split(body: bytes) -> tuple[list[str], Features] | None:
    """The common body — ``dataframe_split`` of rows of plain numbers (``PlainNumber``),
    without ids — as its columns and float32 rows, in one typed pass; ``None`` for any
    other, which ``take_ids`` and ``features_from_mlflow`` read (or say what is wrong with)."""
    if not body.isascii():  # the typed pass would take text the general way checks
        return None
    try:
        split = _decode_split(body).dataframe_split
    except msgspec.DecodeError:  # ValidationError included
        return None
    width = len(split.columns)
    if "id" in split.columns or not split.data or any(len(row) != width for row in split.data):
        return None
    return split.columns, np.array(split.data, dtype=np.float32)


def _from_columns(columns: list[str], rows: Features, layout: FeatureLayout) -> Features:
    return layout.from_columns(columns, rows, finite=True)  # the typed pass read numbers


def read_csv(body: bytes) -> pd.DataFrame:
    """CSV with a header row."""
    try:
        # An id column stays text: "007" is a prediction id, not the number 7.
        return pd.read_csv(io.BytesIO(body), dtype={"id": str})
    except (ValueError, pd.errors.ParserError) as error:
        raise InvalidInputError(f"cannot read the CSV body: {error}") from error


def features_from_frame(frame: pd.DataFrame, layout: FeatureLayout) -> Features:
    """A table whose header row names the features."""
    return layout.from_columns([str(c) for c in frame.columns], frame.to_numpy().tolist())


def _checked(values: list[Any], what: str) -> list[str | None]:
    return [None if v is None else check_id(v, f"{what} {row}") for row, v in enumerate(values)]


def take_ids(payload: Any) -> tuple[Any, list[str | None] | None]:
    """The payload without its ``id`` column or fields, and the ids (None where a row has
    none); no ids when it has no ``id``. The payload is not changed."""
    if not isinstance(payload, dict) or len(payload.keys() & set(FORMATS)) != 1:
        return payload, None  # features_from_mlflow says what is wrong
    key = next(k for k in FORMATS if k in payload)
    value = payload[key]
    if key == "dataframe_split" and isinstance(value, dict):
        columns, data = value.get("columns"), value.get("data")
        if not isinstance(columns, list) or "id" not in columns or not isinstance(data, list):
            return payload, None
        at = columns.index("id")
        if not all(isinstance(row, list) and len(row) == len(columns) for row in data):
            raise InvalidInputError(
                f"`data` must be rows of {len(columns)} values (one per column)"
            )
        ids = _checked([row[at] for row in data], "row")
        rest = {"columns": columns[:at] + columns[at + 1 :]}
        rest["data"] = [row[:at] + row[at + 1 :] for row in data]
        return {key: rest}, ids
    if isinstance(value, list) and any(isinstance(r, dict) and "id" in r for r in value):
        ids = _checked([r.get("id") if isinstance(r, dict) else None for r in value], "row")
        rows = [
            {k: v for k, v in r.items() if k != "id"} if isinstance(r, dict) else r for r in value
        ]
        return {key: rows}, ids
    if key in ("inputs", "instances") and isinstance(value, dict) and "id" in value:
        given = value["id"]
        if not isinstance(given, list):
            raise InvalidInputError("`id` must be a list of one id per row")
        return {key: {k: v for k, v in value.items() if k != "id"}}, _checked(given, "row")
    return payload, None


def fill_ids(given: list[str | None] | None, rows: int) -> list[str]:
    """The client's ids, with a new one wherever a row has none."""
    if given is None:
        return new_ids(rows)
    if len(given) != rows:
        raise InvalidInputError(f"{len(given)} ids for {rows} rows; give one id per row")
    missing = iter(new_ids(sum(1 for i in given if i is None)))
    return [i if i is not None else next(missing) for i in given]


def records(outputs: Outputs) -> list[dict[str, Any]]:
    """Per-row objects of every output (class probabilities as lists)."""
    names = list(outputs)
    columns = [outputs[n].tolist() for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


@router.post("/invocations", openapi_extra=INVOCATIONS_BODY)
async def invocations(request: Request) -> Response:
    """Score rows with the server's default model."""
    started = time.perf_counter()
    state = state_of(request)
    if state.default_model is None:
        raise NotFoundError("this server has no default model; start it with --models NAME")
    media = require_media_type(header(request, b"content-type"), ("application/json", "text/csv"))
    body = await request.body()
    features: Callable[[FeatureLayout], Features]
    given: list[str | None] | None = None
    if media == "text/csv":
        frame = read_csv(body)
        if "id" in frame.columns:
            given = _checked([None if pd.isna(v) else str(v) for v in frame.pop("id")], "row")
        features = functools.partial(features_from_frame, frame)
    elif (split := plain_split(body)) is not None:
        features = functools.partial(_from_columns, *split)
    else:
        payload, given = take_ids(parse_json(body))
        features = functools.partial(features_from_mlflow, payload)
    ids = functools.partial(fill_ids, given)
    result = await state.service.infer(state.default_model, features, ids, started)
    return json_response(
        {
            "predictions": records(result.outputs),
            "ids": result.ids,
            "model": result.model,
            "version": result.version,
        }
    )

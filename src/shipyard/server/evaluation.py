"""``POST /v1/models/{ref}:evaluate``: a registered version scored on an uploaded labelled
table (CSV or Parquet) with the metrics of the spec that trained it."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shipyard.inference import load_predictor
from shipyard.registry import ModelRef, Registry
from shipyard.server.auth import inference
from shipyard.server.responses import ErrorBody, json_response, model_ref
from shipyard.server.state import state_of
from shipyard.server.uploads import MULTIPART, Upload, body_table

router = APIRouter(prefix="/v1", tags=["predict"], dependencies=[Depends(inference)])

EVALUATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The labelled table: the model's features and "
                            "the spec's target column",
                        }
                    },
                }
            },
            # A raw application/vnd.apache.parquet body works too; it is left out here
            # because OpenAPI tools cannot produce one.
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/models/{ref}:evaluate",
    openapi_extra=EVALUATE_BODY,
    responses={
        400: {"model": ErrorBody, "description": "An empty or unreadable table"},
        404: {"model": ErrorBody, "description": "No such model, version or alias"},
        409: {"model": ErrorBody, "description": "The version has no run, hence no spec"},
        413: {"model": ErrorBody, "description": "Body over SHIPYARD_MAX_BODY_BYTES"},
        415: {"model": ErrorBody, "description": "Not a CSV or Parquet table"},
        422: {
            "model": ErrorBody,
            "description": "A missing target or feature column, a "
            "value that is not a number, a label that is no class",
        },
    },
)
async def evaluate(request: Request, ref: str) -> Response:
    """Score a labelled table (multipart field ``file``, or the raw body as ``text/csv`` or
    ``application/vnd.apache.parquet``) with version ``ref`` (``NAME`` means
    ``NAME@production``) and answer the metrics of the spec that trained it, beside those it
    recorded on its own held-out rows."""
    state = state_of(request)
    parsed = state.service.parse(model_ref(ref))
    upload = await body_table(request, field="file")
    # Verifying, loading and scoring take CPU seconds: off the event loop, which keeps serving.
    body = await asyncio.to_thread(_evaluate, state.registry, parsed, upload)
    return json_response(body)


def _evaluate(registry: Registry, ref: ModelRef, upload: Upload) -> dict[str, Any]:
    # Imported here, in the thread: the pipeline's stages import scikit-learn (about a
    # second), which a server that only predicts would otherwise spend at start.
    from shipyard.pipeline.evaluation import evaluate_frame, trained_spec

    version = registry.get_version(ref)
    spec = trained_spec(registry, version)
    predictor = load_predictor(registry.load_artifact(version.ref))
    evaluation = evaluate_frame(spec, predictor, upload.read(), upload.name)
    return {
        "model": evaluation.model,
        "version": evaluation.version,
        "spec": evaluation.spec,
        "run_id": version.run_id,
        "target": evaluation.target,
        "rows": evaluation.rows,
        "metrics": evaluation.metrics,
        "recorded_metrics": {
            name: version.metrics[name] for name in evaluation.metrics if name in version.metrics
        },
    }

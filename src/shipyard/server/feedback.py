"""Ground truth over HTTP: ``POST /v1/feedback`` stores a batch of ``{id, label}`` for a model
(operator role, by token or API key); the monitor joins the labels to their predictions."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from shipyard.errors import InvalidInputError
from shipyard.monitoring.feedback import ingest_feedback
from shipyard.registry import ModelRef, Principal, Role
from shipyard.server.auth import require
from shipyard.server.responses import (
    JSON,
    ErrorBody,
    json_response,
    parse_json,
    require_media_type,
)
from shipyard.server.state import state_of

router = APIRouter(prefix="/v1", tags=["monitoring"])
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
BODY_KEYS = frozenset({"model", "feedback"})
SHAPE = '{"model": NAME, "feedback": [{"id": ..., "label": ...}, ...]}'
EXAMPLE = {"model": "fraud", "feedback": [{"id": "tx-1", "label": 1}, {"id": "tx-2", "label": 0}]}
FEEDBACK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["feedback"],
                    "properties": {
                        "model": {
                            "type": "string",
                            "description": "The model the predictions came from; default the "
                            "server's default model (the first of --models)",
                        },
                        "feedback": {
                            "type": "array",
                            "minItems": 1,
                            "description": "At most SHIPYARD_MAX_FEEDBACK_ITEMS (10,000) items",
                            "items": {
                                "type": "object",
                                "required": ["id", "label"],
                                "properties": {
                                    "id": {
                                        "type": "string",
                                        "description": "The id the prediction answered with",
                                    },
                                    "label": {
                                        "description": "The true label: a class of the model "
                                        "(1, true, 1.0 or '1' for class 1) or, for a "
                                        "regression, a number"
                                    },
                                },
                            },
                        },
                    },
                },
                "example": EXAMPLE,
            }
        },
    }
}


class FeedbackAnswer(BaseModel):
    """What became of the batch: every item stored but the duplicates."""

    model: str
    received: int
    accepted: int
    duplicates: list[str]
    """Ids that already had a label (or came twice in the batch); the first label stands."""
    note: str
    counts: str
    """Where the totals of joined, unknown and late labels are read."""


@router.post(
    "/feedback",
    openapi_extra=FEEDBACK_BODY,
    response_model=FeedbackAnswer,
    responses={
        400: {
            "model": ErrorBody,
            "description": "Bad JSON or shape, or a label of the wrong "
            "type (the message names the id); nothing of the batch was stored",
        },
        404: {"model": ErrorBody, "description": "No such model"},
        413: {"model": ErrorBody, "description": "More items than SHIPYARD_MAX_FEEDBACK_ITEMS"},
    },
)
async def post_feedback(request: Request, principal: Operator) -> Response:
    """Store the true labels of earlier predictions, by their ids. Needs the operator role.

    A batch with one bad item is refused whole. Duplicate ids are reported and skipped;
    unknown and late ids are counted when the monitor joins the labels to predictions.
    """
    state = state_of(request)
    require_media_type(request.headers.get("content-type"), (JSON,))
    payload = parse_json(await request.body())
    if not isinstance(payload, dict):
        raise InvalidInputError(f"the body must be a JSON object {SHAPE}")
    extra = sorted(payload.keys() - BODY_KEYS)
    if extra:
        raise InvalidInputError(f"unknown fields {', '.join(extra)}; the body is {SHAPE}")
    model = payload.get("model", state.default_model)
    if model is None:
        raise InvalidInputError(
            f"name the model: {SHAPE} (this server has no default model; see --models)"
        )
    if not isinstance(model, str):
        raise InvalidInputError(f"`model` must be a model name, not {model!r}")
    name = ModelRef.parse(model).name
    if "feedback" not in payload:
        raise InvalidInputError(f"no `feedback` list; the body is {SHAPE}")
    items = payload["feedback"]
    if isinstance(items, list) and not items:
        raise InvalidInputError("the `feedback` list is empty; send at least one item")
    receipt = await asyncio.to_thread(
        ingest_feedback,
        state.registry,
        name,
        items,
        "http",
        max_items=state.settings.max_feedback_items,
    )
    counts = f"/v1/monitoring/models/{name}"
    return json_response(
        {
            "model": name,
            "received": receipt.received,
            "accepted": receipt.accepted,
            "duplicates": receipt.duplicates,
            "note": "unknown ids and ids older than the join window are counted when the "
            f"monitor joins labels to predictions; see GET {counts}",
            "counts": counts,
        }
    )

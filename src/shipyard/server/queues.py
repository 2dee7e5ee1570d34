"""Publishing transactions over HTTP, for clients without a broker library: the route puts
a batch of JSON objects on a broker queue that ``shipyard stream`` consumes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from shipyard.errors import InvalidInputError, NotFoundError, SchemaError
from shipyard.messaging import BackpressureError
from shipyard.registry import Principal, Role
from shipyard.server.auth import require
from shipyard.server.responses import json_response
from shipyard.server.state import state_of

router = APIRouter(prefix="/v1/queues", tags=["queues"])
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
MAX_MESSAGES = 10_000
EXAMPLE = [{"id": "tx-1", "Time": 0.0, "V1": -1.36, "Amount": 149.62}]


class Published(BaseModel):
    """Every message of the batch is stored by the broker."""

    queue: str
    published: int
    ids: list[str]


class Refused(BaseModel):
    """The queue is full: the listed messages were not stored; send them again later."""

    error: str
    published: int
    refused_ids: list[str]


@router.post(
    "/{queue}/messages",
    status_code=202,
    response_model=Published,
    responses={503: {"model": Refused, "description": "The queue is full (Retry-After)"}},
)
async def publish_messages(
    request: Request,
    queue: str,
    messages: Annotated[
        list[dict[str, Any]],
        Body(
            description="JSON objects (a model's features and an `id` string; an `id` is "
            "made up for those without)",
            examples=[EXAMPLE],
        ),
    ],
    principal: Operator,
) -> Response:
    """Publish a batch of messages (transactions) to a queue; answers once the broker has
    stored every one. Needs the operator role."""
    state = state_of(request)
    if queue not in state.settings.publish_queues:
        raise NotFoundError(
            f"queue {queue!r} is not open for publishing here; this server publishes to "
            f"{', '.join(state.settings.publish_queues)} (SHIPYARD_PUBLISH_QUEUES)"
        )
    if not messages:
        raise InvalidInputError("no messages; send a JSON array of at least one object")
    if len(messages) > MAX_MESSAGES:
        raise InvalidInputError(
            f"{len(messages):,} messages in one request; send at most {MAX_MESSAGES:,} per request"
        )
    ids: list[str] = []
    bodies: list[bytes] = []
    for position, message in enumerate(messages):
        message_id = message.get("id")
        if message_id is None:
            message_id = uuid.uuid4().hex
            message = {"id": message_id, **message}
        elif not isinstance(message_id, str) or not message_id:
            shown = orjson.dumps(message_id).decode()[:60]
            raise SchemaError(f"message {position}: `id` must be a non-empty string, got {shown}")
        ids.append(message_id)
        bodies.append(orjson.dumps(message))
    broker = await state.broker_for(queue)
    try:
        await broker.publish(queue, bodies)
    except BackpressureError as error:
        refused = [ids[i] for i in error.refused]
        response = json_response(
            {"error": str(error), "published": len(ids) - len(refused), "refused_ids": refused},
            503,
        )
        response.headers["Retry-After"] = "1"
        return response
    return json_response({"queue": queue, "published": len(ids), "ids": ids}, 202)

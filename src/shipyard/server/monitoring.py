"""What the monitor knows about a model over HTTP: ``GET /v1/monitoring/models/{name}`` (the
latest state per version), ``…/versions/{version}/history`` (that state over time) and
``…/events`` (what the monitor and the loop decided, by time).

Read routes like the registry's: open unless ``protect_inference`` asks for a token.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from shipyard.errors import InvalidInputError
from shipyard.monitoring.history import MAX_POINTS, history_document
from shipyard.monitoring.report import event_document, monitoring_report
from shipyard.server.auth import inference
from shipyard.server.responses import MAX_VERSION, json_response
from shipyard.server.state import state_of

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"], dependencies=[Depends(inference)])

Since = Annotated[
    datetime | None,
    Query(description="from this time on, ISO 8601 with a zone (e.g. 2026-11-30T08:00:00Z)"),
]
Until = Annotated[datetime | None, Query(description="before this time, ISO 8601 with a zone")]


def _range(since: datetime | None, until: datetime | None) -> None:
    """400 for a time without a zone, or a range that ends before it starts."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInputError(
                f"{name}={value.isoformat()} has no time zone; add one, e.g. "
                f"{value.isoformat()}Z for UTC"
            )
    if since is not None and until is not None and until <= since:
        raise InvalidInputError(
            f"until ({until.isoformat()}) must be after since ({since.isoformat()})"
        )


@router.get("/models/{name}")
async def model_monitoring(
    request: Request,
    name: str,
    events: Annotated[int, Query(ge=0, le=1000, description="latest events to include")] = 20,
) -> Response:
    """Per version: the monitor's latest windows, live vs offline performance, drift per
    feature and events; the model's feedback counts and which monitor holds it. 404 for an
    unknown model; a model no monitor has watched yet has no versions and a hint."""
    document = await asyncio.to_thread(
        monitoring_report, state_of(request).registry, name, events=events
    )
    return json_response(document)


@router.get("/models/{name}/versions/{version}/history")
async def version_history(
    request: Request,
    name: str,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    since: Since = None,
    until: Until = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_POINTS,
            description="most points to return; a range holding more is thinned evenly",
        ),
    ] = 1000,
) -> Response:
    """One version's live performance (per window: metrics, labels, coverage) and drift
    (share, verdict, each feature's statistic) over time, oldest first, as the monitor kept
    it (a point every ``SHIPYARD_MONITOR_HISTORY_SECONDS`` and at every verdict change);
    with the version's offline metrics and drift rules. At most ``limit`` points: when the
    range holds more (``matched``), every k-th from the newest on. 404 for an unknown model
    or version."""
    _range(since, until)
    document = await asyncio.to_thread(
        history_document,
        state_of(request).registry,
        name,
        version,
        since=since,
        until=until,
        limit=limit,
    )
    return json_response(document)


@router.get("/models/{name}/events")
async def model_events(
    request: Request,
    name: str,
    since: Since = None,
    until: Until = None,
    kind: Annotated[str | None, Query(max_length=100, description="e.g. drift.detected")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="latest events to return")] = 200,
) -> Response:
    """The model's events in a time range, oldest first (the latest ``limit`` of them):
    drift and performance episodes and the loop's decisions, each with its evidence. 404
    for an unknown model."""
    _range(since, until)
    records = await asyncio.to_thread(
        state_of(request).registry.monitoring.events,
        name,
        kind=kind,
        limit=limit,
        newest_first=True,
        since=since,
        until=until,
    )
    return json_response(
        {
            "model": name,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "events": [event_document(e) for e in reversed(records)],
        }
    )

"""What the monitor knows about a model over HTTP: ``GET /v1/monitoring/models/{name}``.

A read route like the registry's: open unless ``protect_inference`` asks for a token.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from shipyard.monitoring.report import monitoring_report
from shipyard.server.auth import inference
from shipyard.server.responses import json_response
from shipyard.server.state import state_of

router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"], dependencies=[Depends(inference)])


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

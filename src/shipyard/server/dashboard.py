"""The dashboard in the browser: ``GET /ui``, its static files and the traffic it samples.

The page is plain HTML, CSS and JavaScript shipped in the package (``server/ui/``): no CDN,
no JavaScript library, so it works offline. It holds no data itself; it reads the JSON
routes — the registry, ``/v1/monitoring/…`` and ``GET /v1/server/traffic`` — which need a
``viewer`` token when inference is protected. The page asks ``/ui/config`` whether they
do, shows a login form that posts to ``POST /v1/auth/token``, and sends the token it gets
with every read.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shipyard import __version__
from shipyard.errors import NotFoundError
from shipyard.server.auth import TOKEN_URL, inference
from shipyard.server.metrics import traffic_document
from shipyard.server.responses import json_response
from shipyard.server.state import state_of

#: The page's files and their media types; nothing else under /ui is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Only the page's own files and routes: a script injected through data could load nothing.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on each load: a server upgraded under an open tab serves its new page.
    "Cache-Control": "no-cache",
}
#: How often the page reloads the monitor's data and samples the traffic counters.
REFRESH_SECONDS = 5.0
TRAFFIC_SECONDS = 2.0

router = APIRouter(tags=["dashboard"])
data = APIRouter(prefix="/v1/server", tags=["dashboard"], dependencies=[Depends(inference)])


@cache
def asset(name: str) -> bytes:
    """The bytes of one of the page's files, read from the package once."""
    if name not in ASSETS:
        raise NotFoundError(
            f"the dashboard has no file {name!r}; it serves {', '.join(sorted(ASSETS))} (open /ui)"
        )
    return (files("shipyard.server") / "ui" / name).read_bytes()


def _file(name: str) -> Response:
    return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)


@router.api_route("/ui", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> Response:
    """The dashboard: models, versions and aliases; live performance and drift over time;
    the loop's events; traffic."""
    return _file("index.html")


@router.api_route("/ui/config", methods=["GET", "HEAD"], include_in_schema=False)
async def config(request: Request) -> Response:
    """What the page needs before its first read: whether it must sign in first."""
    settings = state_of(request).settings
    return json_response(
        {
            "version": __version__,
            "protected": settings.protect_inference,
            "token_url": TOKEN_URL,
            "refresh_seconds": REFRESH_SECONDS,
            "traffic_seconds": TRAFFIC_SECONDS,
        },
    )


@router.api_route("/ui/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def static(name: str) -> Response:
    """One of the page's files (``ASSETS``); 404 for anything else."""
    return _file(name)


@data.get("/traffic")
async def traffic(request: Request) -> Response:
    """This server's HTTP counters (every worker's): per route requests by status, server
    and client errors and the latency histogram; rows predicted per model version. Totals
    since start: rates and quantiles come from the difference of two samples."""
    document = await asyncio.to_thread(traffic_document, state_of(request).settings)
    return json_response(document)

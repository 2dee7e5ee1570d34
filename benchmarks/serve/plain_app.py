"""The bar of ``benchmarks/serve.py``: an empty FastAPI route, the peers' stack at its cheapest.

``uvicorn plain_app:app`` (with this folder on ``PYTHONPATH``; uvloop, httptools, no access
log) serves a bare ``FastAPI()`` with no middleware, no settings and no Shipyard import:

- ``POST /empty`` answers a constant ``Response`` without reading the body or validating
  anything, the least a FastAPI route can do (``return {"ok": True}`` would cost more:
  FastAPI serialises the dict through its encoder);
- ``GET /ready`` tells the benchmark the process is up.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

EMPTY_BODY = b'{"ok":true}'

app = FastAPI()


@app.post("/empty")
async def empty() -> Response:
    """A constant: no parsing, no model, no middleware."""
    return Response(EMPTY_BODY, media_type="application/json")


@app.get("/ready")
async def ready() -> Response:
    """The process is up."""
    return Response(EMPTY_BODY, media_type="application/json")

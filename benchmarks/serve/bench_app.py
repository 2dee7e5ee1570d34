"""The server under test in ``benchmarks/serve.py``: Shipyard's app plus two benchmark routes.

``uvicorn bench_app:create_bench_app --factory`` (with this folder on ``PYTHONPATH``) builds
``create_app(Settings())`` from the ``SHIPYARD_*`` environment, as ``shipyard serve`` workers
do, and adds, behind the same middleware:

- ``POST /bench/empty``: reads the body and answers a constant; the ceiling of the stack.
  Matched before Shipyard's routes; ``POST /bench/empty-hot`` is the same handler answered
  ahead of the stack (a ``HotRoute`` of ``ShipyardApp``), the way Shipyard answers its
  inference routes.
- ``POST /bench/naive``: the FastAPI tutorial way — a pydantic model of the 30 named
  features, a one-row DataFrame, scikit-learn ``predict_proba`` per request in the thread
  pool. Only added when ``BENCH_NAIVE_ESTIMATOR`` names the estimator the benchmark fitted.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import Request
from pydantic import create_model
from starlette.responses import Response

from shipyard.server.app import create_app
from shipyard.server.hot import HotRoute, ShipyardApp
from shipyard.settings import Settings

FEATURES = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]
EMPTY_BODY = b'{"ok":true}'

# What a hand-written `class Transaction(BaseModel): Time: float; V1: float; …` builds.
FIELDS: dict[str, Any] = {name: (float, ...) for name in FEATURES}
Transaction: Any = create_model("Transaction", **FIELDS)


def create_bench_app() -> ShipyardApp:
    """Shipyard's server with ``/bench/empty`` and, when configured, ``/bench/naive``."""
    app = create_app(Settings())
    shipyard_routes = len(app.router.routes)

    @app.post("/bench/empty", include_in_schema=False)
    async def empty(request: Request) -> Response:
        await request.body()  # every other route reads its body; so does the ceiling
        return Response(EMPTY_BODY, media_type="application/json")

    estimator_path = os.environ.get("BENCH_NAIVE_ESTIMATOR")
    if estimator_path:
        # The file this benchmark run fitted and wrote a moment ago in its own temp folder.
        estimator = pickle.loads(Path(estimator_path).read_bytes())

        @app.post("/bench/naive", include_in_schema=False)
        def naive(transaction: Transaction) -> dict[str, Any]:
            frame = pd.DataFrame([transaction.model_dump()])
            probability = float(estimator.predict_proba(frame)[0, 1])
            return {"probability": probability, "label": int(probability >= 0.5)}

    # Matched first, so the ceiling pays no route scanning that Shipyard's routes avoid.
    app.router.routes[:] = app.router.routes[shipyard_routes:] + app.router.routes[:shipyard_routes]
    # The same empty handler on the path Shipyard's inference routes take: answered ahead of
    # the middleware stack, with the same request metrics. The stricter ceiling.
    app.serve_hot(
        [HotRoute("/bench/empty-hot", empty), *app.hot], max_body_bytes=app.max_body_bytes
    )
    return app

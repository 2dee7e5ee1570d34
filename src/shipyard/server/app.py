"""The FastAPI application: inference routes over one ``InferenceService``, registry routes,
auth, ``/metrics``; errors as ``{"error": "..."}`` with the status each error class names."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from shipyard import __version__
from shipyard.errors import ShipyardError
from shipyard.inference.runtime import ordinary_runtime, serving_runtime
from shipyard.inference.service import InferenceService, ServiceHooks
from shipyard.monitoring.log import HTTP, open_prediction_log
from shipyard.monitoring.recorder import PredictionRecorder
from shipyard.registry import SHADOW_ALIAS, Registry
from shipyard.server import (
    auth,
    classify,
    dashboard,
    evaluation,
    feedback,
    metrics,
    mlflow,
    models,
    monitoring,
    oip,
    pipelines,
    predict,
    queues,
)
from shipyard.server.hot import HotRoute, ShipyardApp
from shipyard.server.limits import BodySizeLimit
from shipyard.server.responses import error_response, json_response
from shipyard.server.state import ServerState, state_of
from shipyard.settings import Settings

logger = logging.getLogger(__name__)


def _hooks() -> ServiceHooks:
    return ServiceHooks(
        observer=metrics.batch_observer,
        load_failed=lambda name, error: metrics.LOAD_FAILURES.labels(
            name, type(error).__name__
        ).inc(),
        swapped=lambda route, old, new: metrics.SWAPS.labels(route.split("@")[0]).inc(),
        shadow_dropped=lambda name, rows: metrics.SHADOW_DROPPED.labels(name).inc(rows),
    )


def _recorder(settings: Settings) -> PredictionRecorder | None:
    log = open_prediction_log(settings)
    if log is None:
        return None
    return PredictionRecorder(
        log,
        buffer_rows=settings.prediction_log_buffer_rows,
        flush_ms=settings.prediction_log_flush_ms,
        on_written=metrics.prediction_log_written,
        on_dropped=lambda model, rows: metrics.PREDICTION_LOG_DROPPED.labels(model).inc(rows),
    )


#: Where a person with curl goes from ``GET /``.
LINKS = {
    "docs": "/docs",
    "openapi": "/openapi.json",
    "open_inference_protocol": "/v2",
    "ready": "/v2/health/ready",
    "predict": "/v1/models/{name}:predict",
    "classify": "/v1/models/{name}:classify",
    "evaluate": "/v1/models/{name}:evaluate",
    "pipeline_runs": "/v1/pipelines/{name}/runs",
    "mlflow_invocations": "/invocations",
    "registry": "/v1/registry/models",
    "monitoring": "/v1/monitoring/models/{name}",
    "metrics": "/metrics",
    "dashboard": "/ui",
    "traffic": "/v1/server/traffic",
}


async def root(request: Request) -> Response:
    """What this server is, the models it loaded at start and where to go next."""
    settings = state_of(request).settings
    body: dict[str, object] = {"name": "shipyard", "version": __version__}
    if not settings.protect_inference:  # model names are for callers who may use them
        body["models"] = settings.serve_models
        body["default_model"] = settings.serve_models[0] if settings.serve_models else None
    body["links"] = LINKS
    return json_response(body)


def create_app(settings: Settings | None = None) -> ShipyardApp:
    """Build the server for these settings (default: from the environment)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry.open(settings)
        recorder = _recorder(settings)
        hooks = _hooks()
        if recorder is not None:  # a shadow's scores are worth keeping only in the log
            hooks.answered = hooks.shadowed = recorder.scored_logger(HTTP)
        service = InferenceService(
            registry,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            poll_seconds=settings.swap_poll_seconds,
            hooks=hooks,
            shadow_alias=SHADOW_ALIAS if recorder is not None else None,
        )
        state = ServerState(
            settings=settings, registry=registry, service=service, recorder=recorder
        )
        app.state.shipyard = state
        auth.attach(app, auth.Authenticator.from_settings(settings, registry))
        # The request metrics reach Prometheus's at least this often (other workers read them).
        flusher = asyncio.create_task(metrics.flush_every(metrics.FLUSH_INTERVAL_S))
        try:
            await service.start(settings.serve_models)
            serving_runtime()  # start-up frozen, rare full collections, a short GIL switch
            state.ready = True
            yield
        finally:
            flusher.cancel()
            metrics.TALLY.flush()  # uvicorn has answered the last request
            ordinary_runtime()
            await service.close()
            if state.recorder is not None:
                state.recorder.close()  # after the last request: writes what is buffered
                state.recorder.log.close()
            await state.close_broker()
            await state.fetcher.close()
            registry.close()

    app = ShipyardApp(
        title="Shipyard",
        version=__version__,
        description="Predictions from signed, registered models: Open Inference Protocol, "
        "MLflow scoring and plain JSON over one batched inference core.",
        lifespan=lifespan,
        # Shipyard's metrics are Prometheus' (/metrics); FastAPI's own OpenTelemetry hooks,
        # on by default, would only look up the environment on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # Open inference adds no per-request auth work; protected inference needs any role.
    # Inference routes come first: each route matched before them costs every request.
    guard = [Depends(auth.inference)] if settings.protect_inference else []
    app.include_router(oip.router, dependencies=guard)
    app.include_router(mlflow.router, dependencies=guard)
    app.include_router(predict.router, dependencies=guard)
    app.include_router(classify.router, dependencies=guard)
    app.include_router(oip.health)
    app.include_router(mlflow.health)
    app.include_router(models.router)
    app.include_router(monitoring.router)
    app.include_router(queues.router)
    app.include_router(feedback.router)
    app.include_router(pipelines.router)
    app.include_router(evaluation.router)
    app.include_router(auth.router)
    app.include_router(dashboard.router)
    app.include_router(dashboard.data)
    auth.install(app)

    app.add_api_route("/", root, methods=["GET"], tags=["server"])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return metrics.metrics_response(settings)

    @app.exception_handler(ShipyardError)
    async def shipyard_error(_: Request, error: ShipyardError) -> Response:
        if error.status_code >= 500:
            logger.error("%s: %s", type(error).__name__, error)
        return error_response(str(error), error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return error_response(problems, 422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> Response:
        response = error_response(str(error.detail), error.status_code)
        response.headers.update(error.headers or {})  # e.g. Allow on 405
        return response

    if not settings.protect_inference:
        # The inference routes are answered ahead of the middleware stack (see ``hot``),
        # by the same handlers. The FastAPI routes stay, and document the API in /docs.
        app.serve_hot(
            [
                HotRoute("/v2/models/{model}/infer", oip.infer_endpoint),
                HotRoute("/v2/models/{model}/versions/{version}/infer", oip.infer_endpoint),
                HotRoute("/invocations", mlflow.invocations),
                HotRoute("/v1/models/{name}:predict", predict.predict_endpoint),
                HotRoute("/v1/models/{name}:classify", classify.classify_endpoint, buffered=False),
            ],
            max_body_bytes=settings.max_body_bytes,
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.MetricsMiddleware)
    return app

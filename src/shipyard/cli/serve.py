"""``shipyard serve``: the inference server (uvicorn) over the registry."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer
import uvicorn

from shipyard.cli.context import console, settings_of
from shipyard.registry import DEFAULT_ALIAS, Registry


def serve(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            "-m",
            help=f"Model to load at start (NAME means NAME@{DEFAULT_ALIAS}; repeat the option); "
            "the first one answers /invocations",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes")] = 1,
    max_batch_size: Annotated[
        int | None, typer.Option(min=1, help="Most rows per predictor call")
    ] = None,
    max_batch_delay_ms: Annotated[
        float | None, typer.Option(min=0, help="Longest wait for a batch to fill")
    ] = None,
    protect_inference: Annotated[
        bool | None,
        typer.Option(
            "--protect-inference/--open-inference",
            help="Require a token or API key on inference routes [env: SHIPYARD_PROTECT_INFERENCE]",
        ),
    ] = None,
) -> None:
    """Serve predictions over Open Inference Protocol, MLflow scoring and plain JSON."""
    overrides: dict[str, object] = {"serve_models": list(models or [])}
    if max_batch_size is not None:
        overrides["max_batch_size"] = max_batch_size
    if max_batch_delay_ms is not None:
        overrides["max_batch_delay_ms"] = max_batch_delay_ms
    if protect_inference is not None:
        overrides["protect_inference"] = protect_inference
    settings = settings_of(ctx).model_copy(update=overrides)
    # Fail here, in one line, if the database or a model cannot be reached or verified.
    with Registry.open(settings) as registry:
        for ref in settings.serve_models:
            registry.get_version(ref if ("@" in ref or ":" in ref) else f"{ref}@{DEFAULT_ALIAS}")
    console.print(
        f"serving {', '.join(settings.serve_models) or 'models on demand'} on "
        f"http://{host}:{port} ({workers} worker{'s' * (workers > 1)}); docs at /docs"
    )
    options = {"host": host, "port": port, "log_level": "warning", "access_log": False}
    if workers == 1:
        from shipyard.server.app import create_app

        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    # Worker processes (uvicorn spawns them) inherit this environment and rebuild their
    # settings from it.
    metrics_dir = settings.home / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    environment = settings.model_copy(update={"prometheus_multiproc_dir": metrics_dir}).child_env()
    os.environ.clear()
    os.environ.update(environment)
    uvicorn.run(
        "shipyard.server.app:create_app",
        factory=True,
        workers=workers,
        **options,  # type: ignore[arg-type]
    )

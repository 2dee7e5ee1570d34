"""``shipyard stream``: score messages from a broker queue into a results queue."""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.context import (
    MetricsHostOption,
    err_console,
    serve_metrics,
    settings_of,
    verbose_of,
)
from shipyard.cli.queues import BrokerOption
from shipyard.errors import ConfigurationError
from shipyard.registry.reference import DEFAULT_ALIAS

if TYPE_CHECKING:
    from shipyard.settings import Settings
    from shipyard.stream.scorer import ScorerConfig


def stream(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            metavar="MODEL",
            help=f"NAME (means NAME@{DEFAULT_ALIAS}), NAME@ALIAS or NAME:VERSION",
        ),
    ],
    broker: BrokerOption = None,
    queue: Annotated[
        str, typer.Option(metavar="QUEUE", help="Queue of input messages")
    ] = "transactions",
    results: Annotated[
        str, typer.Option(metavar="QUEUE", help="Queue the results go to")
    ] = "results",
    dead_letter: Annotated[
        str | None,
        typer.Option(metavar="QUEUE", help="Queue of refused messages \\[default: QUEUE.dead]"),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(metavar="N", min=1, max=10_000, help="Most messages per batch")
    ] = 256,
    max_wait_ms: Annotated[
        float,
        typer.Option(metavar="MS", min=0, help="Longest wait for the first message of a batch"),
    ] = 20.0,
    workers: Annotated[int, typer.Option(metavar="N", min=1, max=256, help="Worker processes")] = 1,
    max_deliveries: Annotated[
        int,
        typer.Option(metavar="N", min=1, help="Deliveries after which a message is dead-lettered"),
    ] = 5,
    results_max_length: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, help="Bound of the results queue; when full, scoring pauses"
        ),
    ] = None,
    redelivery_ms: Annotated[
        float,
        typer.Option(
            metavar="MS", min=100, help="How long a dead worker's messages wait for another"
        ),
    ] = 30_000,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on --metrics-host:PORT(+rank)",
        ),
    ] = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    worker_id: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Score messages from QUEUE with the model; results to RESULTS; bad ones to dead-letter."""

    from shipyard.messaging import shown_url
    from shipyard.messaging.embedded import broker_url
    from shipyard.stream.scorer import ScorerConfig
    from shipyard.stream.workers import run_worker, worker_name

    settings = settings_of(ctx)
    if broker is not None:
        settings = settings.model_copy(update={"broker_url": broker})
    if settings.mpi_rank is not None and workers > 1:
        raise ConfigurationError(
            "--workers starts processes itself; under mpiexec each rank is one worker: "
            "mpiexec -n N shipyard stream … without --workers"
        )
    name = worker_name(settings, worker_id)
    config = ScorerConfig(
        model=model,
        queue=queue,
        results=results,
        dead_letter=dead_letter,
        batch_size=batch_size,
        max_wait_ms=max_wait_ms,
        max_deliveries=max_deliveries,
        results_max_length=results_max_length,
        worker=name,
    )
    with broker_url(settings) as url:
        if workers == 1:
            if metrics_port:
                serve_metrics(metrics_port + int(settings.mpi_rank or 0), metrics_host)
            run_worker(settings, config, url, redelivery_ms=redelivery_ms)
            return
        err_console.print(
            f"{workers} workers scoring {model} from {queue!r} on {shown_url(url)}; "
            "Ctrl-C stops them"
        )
        code = _run_pool(
            settings,
            config,
            url,
            redelivery_ms,
            workers,
            metrics_port,
            metrics_host,
            verbose_of(ctx),
        )
    if code:
        raise typer.Exit(code)


def _worker_command(
    config: ScorerConfig, redelivery_ms: float, index: int, verbose: bool
) -> list[str]:
    """The command line of worker ``index``; the settings (home, database, broker…) go by
    environment, so no password shows in the process list."""
    from shipyard.stream.process import options

    command = [sys.executable, "-m", "shipyard", *(["--verbose"] if verbose else []), "stream"]
    return [*command, *options(config, redelivery_ms), "--worker-id", str(index)]


def _run_pool(
    settings: Settings,
    config: ScorerConfig,
    url: str,
    redelivery_ms: float,
    workers: int,
    metrics_port: int | None,
    metrics_host: str,
    verbose: bool,
) -> int:
    from prometheus_client import CollectorRegistry, multiprocess

    from shipyard.stream.workers import WorkerPool

    metrics_dir = settings.home / "metrics" / "stream"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = settings.model_copy(
        update={"broker_url": url, "prometheus_multiproc_dir": metrics_dir}
    ).child_env()
    if metrics_port:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        serve_metrics(metrics_port, metrics_host, registry)
    pool = WorkerPool(
        lambda index: _worker_command(config, redelivery_ms, index, verbose),
        workers,
        env=env,
        on_exit=lambda pid: multiprocess.mark_process_dead(pid, str(metrics_dir)),  # type: ignore[no-untyped-call]
    )
    return pool.run()

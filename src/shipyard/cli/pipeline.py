"""``shipyard pipeline``: run a spec stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shipyard.cli.context import (
    Command,
    Group,
    console,
    err_console,
    open_registry,
    settings_of,
    stage_line,
)
from shipyard.cli.queues import BrokerOption

if TYPE_CHECKING:  # imported when a command runs: scikit-learn takes a second to import
    from rich.console import Console

    from shipyard.pipeline import ClusterOptions, RunResult, Spec
    from shipyard.registry import Registry
    from shipyard.settings import Settings

app = typer.Typer(cls=Group, help="Run pipelines.", no_args_is_help=True)


@app.command(cls=Command)
def run(
    ctx: typer.Context,
    spec_source: Annotated[
        str,
        typer.Argument(
            metavar="SPEC",
            help="A YAML file, or the name of a packaged example (shipyard examples list)",
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Read the table from this file instead of the spec's"),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="RUN",
            help="Carry on this failed or queued run of the same spec (shipyard runs list)",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Dask scheduler that fits an ensemble's learners (tcp://HOST:PORT); "
            "default the scheduler setting, else a local cluster",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes of the local cluster (default the cluster_workers setting)",
        ),
    ] = None,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit",
            help="Queue the run for stage workers (shipyard pipeline worker) on the broker "
            "and print its id, instead of running it here",
        ),
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="With --submit: follow the run until it ends, at most SECONDS",
        ),
    ] = None,
    broker: BrokerOption = None,
) -> None:
    """Ingest, validate, split, train, evaluate, export, register and maybe promote a model.

    A spec with an `ensemble:` section fits its learners as tasks on a Dask cluster. With
    --submit the stages run on stage workers instead (`shipyard pipeline worker`)."""
    from shipyard.errors import InvalidInputError
    from shipyard.pipeline import ClusterOptions, load_spec

    spec, text = load_spec(spec_source, data_file=data)
    settings = settings_of(ctx)
    if broker is not None:
        settings = settings.model_copy(update={"broker_url": broker})
    if not submit and (wait is not None or broker is not None):
        raise InvalidInputError("--wait and --broker go with --submit")
    if submit:
        if resume is not None:
            raise InvalidInputError("--resume runs here; leave it out with --submit")
        submit_and_follow(ctx, settings, spec, text, wait)
        return
    cluster = ClusterOptions(
        scheduler=settings.scheduler if scheduler is None else scheduler,
        workers=settings.cluster_workers if workers is None else workers,
    )
    with open_registry(ctx) as registry:
        if resume is not None:
            check_resumable(registry, resume, spec)
        result = run_with_status(registry, spec, text, console, run_id=resume, cluster=cluster)
    console.print(run_table(result))


def check_resumable(registry: Registry, run_id: str, spec: Spec) -> None:
    """Refuse to carry on a run of another spec (its lineage would lie)."""
    from shipyard.errors import InvalidInputError

    run = registry.runs.get(run_id)
    if run.spec_name != spec.name:
        raise InvalidInputError(
            f"run {run_id} ran spec {run.spec_name!r}, not {spec.name!r}; resume it with "
            "its own spec (`shipyard runs show` prints it) or leave --resume out"
        )


def run_with_status(
    registry: Registry,
    spec: Spec,
    text: str,
    out: Console,
    *,
    run_id: str | None = None,
    cluster: ClusterOptions | None = None,
) -> RunResult:
    """Run a spec (or carry on run ``run_id``) while a status line names the stage, and
    an ensemble's learners done of all."""
    from shipyard.pipeline import Runner

    with out.status("starting") as status:

        def listener(name: str, state: str, seconds: float) -> None:
            if state == "running":
                status.update(f"pipeline {spec.name}: {name}…")
            else:
                out.print(stage_line(name, state, seconds))

        def learners(done: int, failed: int, total: int) -> None:
            lost = f", {failed} failed" if failed else ""
            status.update(f"pipeline {spec.name}: train… learners {done}/{total}{lost}")

        runner = Runner(registry, listener=listener, cluster=cluster, learner_listener=learners)
        result = runner.run(spec, text, run_id=run_id)
    metrics = registry.runs.get(result.run_id).metrics
    if "learners" in metrics:
        failed = int(metrics.get("learners_failed", 0))
        resumed = int(metrics.get("learners_resumed", 0))
        out.print(
            f"  learners: {int(metrics['learners'])} fitted"
            + (f", {failed} failed" if failed else "")
            + (f", {resumed} kept from the failed attempt" if resumed else "")
        )
    return result


def run_table(result: RunResult) -> Table:
    """A summary of a run: version, metrics, promotion."""
    table = Table(title=f"run {result.run_id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model version", result.version.ref)
    table.add_row("rows", f"{result.rows:,}")
    table.add_row("dataset sha256", result.dataset_sha256[:16] + "…")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    promotion = result.promotion
    verdict = "promoted to" if promotion.promoted else "not promoted to"
    table.add_row("promotion", f"{verdict} {promotion.alias} ({promotion.reason})")
    table.add_row("artifact", f"{result.version.format} sha256:{result.version.manifest_digest}")
    return table


def submit_and_follow(
    ctx: typer.Context, settings: Settings, spec: Spec, text: str, wait: float | None
) -> None:
    """Submit a run to the stage workers, print its id and, with ``wait``, follow it."""
    import asyncio

    from shipyard.messaging import open_broker, shown_url
    from shipyard.messaging.embedded import broker_url
    from shipyard.pipeline.events import submit_run

    async def submitted(registry: Registry, url: str) -> str:
        broker = open_broker(url, redelivery_ms=settings.stage_redelivery_ms)
        try:
            return await submit_run(
                registry, broker, spec, text, prefix=settings.stage_queue_prefix
            )
        finally:
            await broker.close()

    with open_registry(ctx) as registry, broker_url(settings) as url:
        run_id = asyncio.run(submitted(registry, url))
        # The id alone on stdout, for RUN=$(shipyard pipeline run SPEC --submit).
        print(run_id)
        err_console.print(
            f"run {run_id} of {spec.name} submitted to the stage workers on {shown_url(url)}; "
            f"`shipyard runs show {run_id}` follows it"
        )
        if wait is not None:
            follow(registry, run_id, wait)


def follow(registry: Registry, run_id: str, timeout_s: float) -> None:
    """Print each stage of a run as it ends until the run ends (exit 1 if it failed) or
    ``timeout_s`` passes (exit 6: it goes on)."""
    import time

    deadline = time.monotonic() + timeout_s
    shown = 0
    while True:
        run = registry.runs.get(run_id)
        ended = [stage for stage in run.stages if stage.status in ("succeeded", "failed")]
        for stage in ended[shown:]:
            line = stage_line(stage.name, stage.status, stage.duration_s)
            err_console.print(f"{line}  {stage.worker}" if stage.worker else line)
        shown = len(ended)
        if run.status == "succeeded":
            version = registry.versions_of_runs([run_id]).get(run_id)
            ref = version.ref if version is not None else "-"
            err_console.print(f"run {run_id} [green]succeeded[/]: {ref}")
            return
        if run.status == "failed":
            err_console.print(f"[red]run {run_id} failed:[/] {run.error}")
            raise typer.Exit(1)
        if time.monotonic() >= deadline:
            err_console.print(
                f"run {run_id} is still {run.status} after {timeout_s:g} s; it goes on "
                f"(`shipyard runs show {run_id}`)"
            )
            raise typer.Exit(6)
        time.sleep(0.2)


@app.command(cls=Command)
def worker(
    ctx: typer.Context,
    stages: Annotated[
        str,
        typer.Option(
            metavar="NAMES",
            help="Comma-separated stages this worker runs",
        ),
    ] = "ingest,validate,split,train,evaluate,export,register,promote",
    broker: BrokerOption = None,
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Recorded beside host:pid on the stages it runs"),
    ] = None,
) -> None:
    """Run the stages of submitted runs (`shipyard pipeline run SPEC --submit`) from the
    broker, until Ctrl-C or SIGTERM. Start as many as you like, on any host that shares
    the registry database and artifact store."""
    import asyncio
    import logging
    import sys

    from shipyard.messaging import open_broker, shown_url
    from shipyard.messaging.embedded import broker_url
    from shipyard.pipeline import ClusterOptions
    from shipyard.pipeline.workers import WorkerConfig, serve, worker_identity

    settings = settings_of(ctx)
    if broker is not None:
        settings = settings.model_copy(update={"broker_url": broker})
    config = WorkerConfig(
        stages=tuple(part.strip() for part in stages.split(",") if part.strip()),
        prefix=settings.stage_queue_prefix,
        worker=worker_identity(name),
        lease_s=settings.stage_lease_seconds,
        max_deliveries=settings.stage_max_deliveries,
        defer_s=settings.stage_defer_seconds,
        cluster=ClusterOptions(scheduler=settings.scheduler, workers=settings.cluster_workers),
    )
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker={config.worker} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with open_registry(ctx) as registry, broker_url(settings) as url:
        err_console.print(
            f"stage worker {config.worker}: {', '.join(config.stages)} from "
            f"{shown_url(url)} ({settings.stage_queue_prefix}.*); Ctrl-C stops it"
        )
        opened = open_broker(url, redelivery_ms=settings.stage_redelivery_ms)
        asyncio.run(serve(opened, registry, config))

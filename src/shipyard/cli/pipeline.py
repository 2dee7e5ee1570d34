"""``shipyard pipeline``: run a spec stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shipyard.cli.context import Command, Group, console, open_registry, settings_of

if TYPE_CHECKING:  # imported when a command runs: scikit-learn takes a second to import
    from rich.console import Console

    from shipyard.pipeline import ClusterOptions, RunResult, Spec
    from shipyard.registry import Registry

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
) -> None:
    """Ingest, validate, split, train, evaluate, export, register and maybe promote a model.

    A spec with an `ensemble:` section fits its learners as tasks on a Dask cluster."""
    from shipyard.pipeline import ClusterOptions, load_spec

    spec, text = load_spec(spec_source, data_file=data)
    settings = settings_of(ctx)
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
                mark = "[green]✓[/]" if state == "succeeded" else "[red]✗[/]"
                out.print(f"  {mark} {name:<9} {seconds:7.2f} s")

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

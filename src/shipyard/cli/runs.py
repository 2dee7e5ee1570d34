"""``shipyard runs``: pipeline runs — list them, or show one's stages, metrics and version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from shipyard.cli.context import Command, Group, console, open_registry, settings_of

if TYPE_CHECKING:
    from shipyard.registry import ModelVersionInfo, RunInfo

app = typer.Typer(cls=Group, help="Inspect pipeline runs.", no_args_is_help=True)

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "yellow",
    "queued": "cyan",
}


@app.command("list", cls=Command)
def list_runs(
    ctx: typer.Context,
    spec: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only the runs of this pipeline spec")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="Most runs to list")] = 20,
) -> None:
    """The newest runs first: id, spec, status, start, duration and the version registered."""
    from shipyard.pipeline.training import settle

    home = settings_of(ctx).home
    with open_registry(ctx) as registry:
        runs = [settle(registry, home, run) for run in registry.runs.recent(spec, limit=limit)]
        versions = registry.versions_of_runs([run.id for run in runs])
    if not runs:
        which = f"of {spec!r} " if spec is not None else ""
        console.print(f"no runs {which}yet; start one with `shipyard pipeline run SPEC`")
        return
    # No rules, one space between columns: the whole id (what `runs show` takes) and the
    # rest fit in 80 columns.
    table = Table(
        Column("id", no_wrap=True),
        "spec",
        Column("status", no_wrap=True),
        Column("started", no_wrap=True),
        Column("duration", no_wrap=True),
        "version",
        box=None,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for run in runs:
        version = versions.get(run.id)
        table.add_row(
            run.id,
            run.spec_name,
            _status(run.status),
            f"{run.started_at:%m-%d %H:%M}",
            _duration(run),
            version.ref if version is not None else "-",
        )
    console.print(table)


@app.command(cls=Command)
def show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id (shipyard runs list)")],
) -> None:
    """A run: status, error, stages with timings, metrics, learners, version and data."""
    from shipyard.pipeline.training import learners, settle

    home = settings_of(ctx).home
    with open_registry(ctx) as registry:
        run = settle(registry, home, registry.runs.get(run_id))
        version = registry.versions_of_runs([run.id]).get(run.id)
    console.print(_summary(run, version))
    data = run.params.get("data")
    if isinstance(data, dict) and "path" in data:
        console.print(f"data file: {escape(str(data['path']))}", soft_wrap=True)
    if run.stages:
        stages = Table(
            "stage", "status", "started", "seconds", "worker", "attempts", "error", title="stages"
        )
        for stage in run.stages:
            stages.add_row(
                stage.name,
                _status(stage.status),
                f"{stage.started_at:%H:%M:%S}",
                f"{stage.duration_s:.2f}" if stage.status != "running" else "…",
                escape(stage.worker or "in-process"),
                str(stage.attempts),
                escape(stage.error or ""),
            )
        console.print(stages)
    if run.metrics:
        metrics = Table("metric", "value", title="metrics")
        for name, value in run.metrics.items():
            metrics.add_row(name, f"{value:.4f}")
        console.print(metrics)
    counted = learners(run)
    if counted is not None:
        console.print(f"learners: {counted['done']} done, {counted['failed']} failed")


def _summary(run: RunInfo, version: ModelVersionInfo | None) -> Table:
    table = Table(show_header=False, title=f"run {run.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("spec", run.spec_name)
    table.add_row("status", _status(run.status))
    if run.error:
        table.add_row("error", escape(run.error))
    table.add_row("started", f"{run.started_at:%Y-%m-%d %H:%M:%S %Z}")
    table.add_row("duration", _duration(run))
    table.add_row("version", version.ref if version is not None else "-")
    data = run.params.get("data")
    if isinstance(data, dict) and "path" in data:
        # The file's name in the table (a long path would be cut to the terminal's width);
        # the whole path is printed below it.
        table.add_row("data", escape(PurePath(str(data["path"])).name))
    elif isinstance(data, dict) and "generate" in data:
        table.add_row("data", escape(f"generated: {data['generate']}"))
    table.add_row("dataset sha256", run.dataset_sha256 or "-")
    table.add_row("shipyard", run.package_version or "-")
    return table


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'default')}]{status}[/]"


def _duration(run: RunInfo) -> str:
    """Seconds from start to finish, or so far (``…``) for a run that has not finished."""
    if run.finished_at is not None:
        return f"{(run.finished_at - run.started_at).total_seconds():.1f} s"
    if run.status == "running":
        return f"{(datetime.now(UTC) - run.started_at).total_seconds():.0f} s…"
    return "-"

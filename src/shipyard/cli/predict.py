"""``shipyard predict``: batch-score a file through a registered, verified model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.context import console, open_registry, settings_of

if TYPE_CHECKING:
    import pandas as pd
    from rich.progress import Progress

    from shipyard.registry import Registry

#: Rows per predictor call unless --batch-rows says otherwise (``inference.batch``'s default,
#: written out so that ``--help`` does not import the inference stack).
BATCH_ROWS = 8192


#: Rows per partition on a cluster (``cluster.scoring``'s default, for the same reason).
PARTITION_ROWS = 100_000


def predict(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="NAME, NAME:VERSION or NAME@ALIAS")],
    input: Annotated[
        Path,
        typer.Option(
            "--input", "-i", metavar="FILE", help="CSV, Parquet or JSON Lines file to score"
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="Where to write predictions"),
    ],
    batch_rows: Annotated[
        int, typer.Option(metavar="N", min=1, help="Rows per predictor call")
    ] = BATCH_ROWS,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Score on the Dask cluster of this scheduler (tcp://HOST:8786); the input "
            "must be at the same path on every worker \\[env: SHIPYARD_SCHEDULER]",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, help="Score on a local Dask cluster of N worker processes"
        ),
    ] = None,
    partition_rows: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            help="Rows per task on a cluster (about: a CSV or JSON Lines file is cut by "
            "bytes, a Parquet file at row groups)",
        ),
    ] = PARTITION_ROWS,
) -> None:
    """Score every row of a file; output keeps the input's other columns (ids, labels).

    In this process by default; partition by partition on a Dask cluster with --scheduler
    or --workers (same output, same errors).
    """
    from shipyard.errors import InvalidInputError

    address = settings_of(ctx).scheduler if scheduler is None else scheduler
    if address and workers is not None:
        raise InvalidInputError(
            f"--workers starts a local cluster and --scheduler (or SHIPYARD_SCHEDULER) names "
            f"one at {address}: give one of them"
        )
    with open_registry(ctx) as registry:
        if address or workers is not None:
            rows = score_file_on_cluster(
                registry,
                model,
                input,
                output,
                scheduler=address,
                workers=workers or 1,
                batch_rows=batch_rows,
                partition_rows=partition_rows,
            )
        else:
            rows = len(score_file(registry, model, input, output, batch_rows=batch_rows))
    console.print(f"wrote {rows:,} predictions to {output}")


def score_file(
    registry: Registry, model: str, input: Path, output: Path, *, batch_rows: int
) -> pd.DataFrame:
    """Verify and load the model, score the file with a progress bar, write the result."""
    from shipyard.data import read_table, write_table
    from shipyard.inference import load_predictor
    from shipyard.inference.batch import check_numbers, score_frame

    predictor = load_predictor(registry.load_artifact(model))
    frame = read_table(input)
    check_numbers(frame, predictor.input_schema["features"], input)
    with _progress() as progress:
        task = progress.add_task(
            f"scoring with {predictor.name}:{predictor.version}", total=len(frame), rows=0
        )

        def advance(rows: int) -> None:
            progress.update(task, advance=rows, rows=progress.tasks[0].fields["rows"] + rows)

        scored = score_frame(predictor, frame, batch_rows=batch_rows, progress=advance)
    write_table(scored, output)
    return scored


def score_file_on_cluster(
    registry: Registry,
    model: str,
    input: Path,
    output: Path,
    *,
    scheduler: str,
    workers: int,
    batch_rows: int,
    partition_rows: int,
) -> int:
    """Verify the model, then score the file on a Dask cluster (``scheduler``'s, or a local
    one of ``workers`` processes) with a progress bar; the number of rows written."""
    from shipyard.cluster import cluster_description, open_cluster
    from shipyard.cluster.partitions import output_kind, plan_file
    from shipyard.cluster.scoring import score_file_on_cluster as score_on

    artifact = registry.load_artifact(model)  # verified before any worker sees a byte
    plan = plan_file(input, partition_rows)
    output_kind(output)  # an unsupported suffix is refused before a cluster starts
    label = f"{artifact.manifest.name}:{artifact.manifest.version}"
    with _progress() as progress:
        task = progress.add_task(f"starting the cluster for {label}", total=plan.total, rows=0)
        with open_cluster(scheduler, workers=workers) as client:
            progress.update(
                task, description=f"scoring with {label} on {cluster_description(client)}"
            )

            def advance(rows: int, size: int) -> None:
                shown = progress.tasks[0]
                progress.update(task, advance=size, rows=shown.fields["rows"] + rows)

            return score_on(
                client,
                artifact,
                input,
                output,
                partition_rows=partition_rows,
                batch_rows=batch_rows,
                plan=plan,
                progress=advance,
            )


def _progress() -> Progress:
    """A transient bar of rows done (a cluster's bar over a text file advances by bytes)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )

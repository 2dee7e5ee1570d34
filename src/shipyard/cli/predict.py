"""``shipyard predict``: batch-score a file through a registered, verified model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.context import console, open_registry

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.registry import Registry

#: Rows per predictor call unless --batch-rows says otherwise (``inference.batch``'s default,
#: written out so that ``--help`` does not import the inference stack).
BATCH_ROWS = 8192


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
) -> None:
    """Score every row of a file; output keeps the input's other columns (ids, labels)."""
    with open_registry(ctx) as registry:
        scored = score_file(registry, model, input, output, batch_rows=batch_rows)
    console.print(f"wrote {len(scored):,} predictions to {output}")


def score_file(
    registry: Registry, model: str, input: Path, output: Path, *, batch_rows: int
) -> pd.DataFrame:
    """Verify and load the model, score the file with a progress bar, write the result."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from shipyard.data import read_table, write_table
    from shipyard.inference import load_predictor
    from shipyard.inference.batch import score_frame
    from shipyard.inference.numbers import check_numbers

    predictor = load_predictor(registry.load_artifact(model))
    frame = read_table(input)
    check_numbers(frame, predictor.input_schema["features"], input)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(
            f"scoring with {predictor.name}:{predictor.version}", total=len(frame)
        )
        scored = score_frame(
            predictor, frame, batch_rows=batch_rows, progress=lambda n: progress.advance(task, n)
        )
    write_table(scored, output)
    return scored

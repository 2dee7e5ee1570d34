"""``shipyard predict``: batch-score a file through a registered, verified model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from shipyard.cli.context import console, open_registry
from shipyard.data import read_table, write_table
from shipyard.inference import load_predictor
from shipyard.inference.batch import DEFAULT_BATCH_ROWS, score_frame
from shipyard.registry import Registry


def predict(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV or Parquet file to score")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write predictions")],
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per predictor call")] = (
        DEFAULT_BATCH_ROWS
    ),
) -> None:
    """Score every row of a file; output keeps the input's other columns (ids, labels)."""
    with open_registry(ctx) as registry:
        scored = score_file(registry, model, input, output, batch_rows=batch_rows)
    console.print(f"wrote {len(scored):,} predictions to {output}")


def score_file(
    registry: Registry, model: str, input: Path, output: Path, *, batch_rows: int
) -> pd.DataFrame:
    """Verify and load the model, score the file with a progress bar, write the result."""
    predictor = load_predictor(registry.load_artifact(model))
    frame = read_table(input)
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

"""``shipyard data``: make and inspect datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shipyard.cli.context import console
from shipyard.data import DATASETS, get_dataset, write_table

app = typer.Typer(help="Generate datasets.", no_args_is_help=True)


@app.command()
def generate(
    dataset: Annotated[str, typer.Argument(help=f"Dataset to generate: {', '.join(DATASETS)}")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (.csv or .parquet)")
    ],
    rows: Annotated[int, typer.Option(min=1, help="Number of rows")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same table")] = 0,
) -> None:
    """Write a synthetic table with a known schema, e.g. credit-card-like fraud data."""
    spec = get_dataset(dataset)
    frame = spec.generate(rows, seed)
    write_table(frame, output)
    summary = f"wrote {len(frame):,} rows of {spec.name} to {output}"
    if spec.schema.target is not None:
        rates = frame[spec.schema.target].value_counts(normalize=True).sort_index()
        summary += (
            " (" + ", ".join(f"{spec.schema.target}={k}: {v:.2%}" for k, v in rates.items()) + ")"
        )
    console.print(summary)

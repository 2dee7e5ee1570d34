"""``shipyard data``: make and inspect datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shipyard.cli.context import Command, Group, console

app = typer.Typer(cls=Group, help="Generate datasets.", no_args_is_help=True)


@app.command(cls=Command)
def generate(
    dataset: Annotated[
        str, typer.Argument(metavar="DATASET", help="Dataset to generate, e.g. fraud")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", metavar="FILE", help="File to write (.csv, .parquet or .jsonl)"
        ),
    ],
    rows: Annotated[int, typer.Option(metavar="N", min=1, help="Number of rows")] = 100_000,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Random seed; the same seed gives the same table")
    ] = 0,
) -> None:
    """Write a synthetic table with a known schema, e.g. credit-card-like fraud data."""
    # Imported here, as in every command: pandas and friends take a second that --help skips.
    from shipyard.data import get_dataset, write_table

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

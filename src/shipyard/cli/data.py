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
        str, typer.Argument(metavar="DATASET", help="Dataset to generate: fraud or housing")
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
    drift: Annotated[
        str | None,
        typer.Option(
            metavar="SCENARIO",
            help=(
                "Make the table drift from the training data: mean-shift, variance, few, "
                "many (covariate drift), concept (a new fraud pattern the model misses) or "
                "new-fraud (both: many's shift and a new, learnable fraud pattern)"
            ),
        ),
    ] = None,
    drift_strength: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help=(
                "Standard deviations of shift (mean-shift 0.5, few 2, many 0.5), spread "
                "factor (variance 1.5) or rate of new fraud rows (concept 0.02)"
            ),
        ),
    ] = None,
    drift_features: Annotated[
        float | None,
        typer.Option(
            metavar="SHARE",
            help="Share of the features that move (mean-shift and variance 0.3, many 0.8)",
        ),
    ] = None,
    ids: Annotated[
        str | None,
        typer.Option(
            metavar="PREFIX",
            help="Add an `id` column PREFIX-0, PREFIX-1, …: the ids `shipyard publish` sends "
            "and `shipyard feedback` quotes back",
        ),
    ] = None,
) -> None:
    """Write a synthetic table with a known schema, e.g. credit-card-like fraud data."""
    # Imported here, as in every command: pandas and friends take a second that --help skips.
    from shipyard.data import get_dataset, write_table
    from shipyard.errors import InvalidInputError

    spec = get_dataset(dataset)
    if drift is None and (drift_strength is not None or drift_features is not None):
        raise InvalidInputError("--drift-strength and --drift-features need --drift SCENARIO")
    if drift is not None and spec.drift is None:
        raise InvalidInputError(f"dataset {spec.name!r} has no drift scenarios")
    frame = spec.generate(rows, seed)
    if drift is not None:
        assert spec.drift is not None
        frame = spec.drift(frame, drift, drift_strength, drift_features, seed)
    if ids is not None:
        if not ids.strip():
            raise InvalidInputError("--ids needs a non-empty PREFIX, e.g. --ids tx")
        frame.insert(0, "id", [f"{ids}-{i}" for i in range(len(frame))])
    write_table(frame, output)
    summary = f"wrote {len(frame):,} rows of {spec.name} to {output}"
    if drift is not None:
        summary += f", drifted by {drift}"
    target = spec.schema.target
    if target is not None and spec.schema.column(target).dtype == "float64":
        low, median, high = frame[target].quantile([0.05, 0.5, 0.95]).tolist()
        summary += f" ({target}: median {median:,.0f}, 5–95 % {low:,.0f}–{high:,.0f})"
    elif target is not None:
        rates = frame[target].value_counts(normalize=True).sort_index()
        summary += " (" + ", ".join(f"{target}={k}: {v:.2%}" for k, v in rates.items()) + ")"
    console.print(summary)

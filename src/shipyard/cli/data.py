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
        str,
        typer.Argument(
            metavar="DATASET",
            help="Dataset to generate: fraud or housing (tables); shapes or digits (images)",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="File to write (.csv, .parquet or .jsonl); for images, a folder",
        ),
    ],
    rows: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, help="Number of rows or images \\[default: 100,000; shapes 3,000]"
        ),
    ] = None,
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
    layout: Annotated[
        str | None,
        typer.Option(
            metavar="LAYOUT",
            help=(
                "How images are written: cifar (the CIFAR-10 binary format; 32×32 RGB only, "
                "the default for shapes) or folder (a PNG file per image in a sub-folder per "
                "class, the default for digits)"
            ),
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
    from shipyard.data import IMAGE_DATASETS, get_dataset, write_table
    from shipyard.errors import InvalidInputError

    if dataset in IMAGE_DATASETS:
        if drift is not None or drift_strength is not None or drift_features is not None:
            raise InvalidInputError(f"image dataset {dataset!r} has no drift scenarios")
        if ids is not None:
            raise InvalidInputError("--ids is for tables; images are named by their files")
        _write_images(dataset, output, rows, seed, layout)
        return
    if layout is not None:
        raise InvalidInputError("--layout is for image datasets (shapes, digits)")
    rows = 100_000 if rows is None else rows
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


def _write_images(name: str, output: Path, rows: int | None, seed: int, layout: str | None) -> None:
    """Write image dataset ``name`` into the folder ``output`` in ``layout``."""
    import numpy as np

    from shipyard.data import get_image_dataset
    from shipyard.data.cifar import CIFAR_FORMAT, write_cifar
    from shipyard.data.images import write_image_folder
    from shipyard.errors import InvalidInputError

    dataset = get_image_dataset(name)
    if rows is not None and dataset.default_rows is None:
        raise InvalidInputError(f"{name} is a fixed set of images; leave out --rows")
    chosen = layout or ("cifar" if dataset.fmt == CIFAR_FORMAT else "folder")
    if chosen not in ("cifar", "folder"):
        raise InvalidInputError(f"unknown --layout {chosen!r}; choose cifar or folder")
    if chosen == "cifar" and dataset.fmt != CIFAR_FORMAT:
        raise InvalidInputError(
            f"{name} images are {dataset.fmt.width}×{dataset.fmt.height} {dataset.fmt.mode}; "
            "the CIFAR-10 format holds 32×32 RGB only: use --layout folder"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InvalidInputError(f"{output} already exists and is not an empty folder")
    images = dataset.load(rows, seed)
    classes = sorted({str(label) for label in images.labels.tolist()})
    if chosen == "cifar":
        numbers = {label: index for index, label in enumerate(classes)}
        labels = np.asarray([numbers[str(label)] for label in images.labels.tolist()])
        pixels = np.rint(images.pixels).astype(np.uint8).reshape(-1, 32, 32, 3)
        write_cifar(output, pixels, labels, classes)
        how = "in the CIFAR-10 binary format"
    else:
        write_image_folder(images, output)
        how = "as PNG files, a folder per class"
    console.print(
        f"wrote {len(images.labels):,} images of {name} ({dataset.fmt.width}×"
        f"{dataset.fmt.height} {dataset.fmt.mode}, classes: {', '.join(classes)}) to "
        f"{output} {how}",
        soft_wrap=True,
    )

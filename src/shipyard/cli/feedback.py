"""``shipyard feedback FILE``: the true labels of earlier predictions, from a table, stored in
the registry for the monitor to join (no server needed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shipyard.cli.context import console, open_registry, settings_of

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.registry import Registry

#: The progress bar appears only when sending takes longer than this.
PROGRESS_AFTER_S = 1.0
SHOWN_DUPLICATES = 5


def feedback(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="CSV, Parquet or JSON Lines file of ids and labels"),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="NAME",
            help="Model the predictions came from \\[default: the home's only model]",
        ),
    ] = None,
    id_column: Annotated[
        str, typer.Option(metavar="COLUMN", help="Column of the prediction ids")
    ] = "id",
    label_column: Annotated[
        str, typer.Option(metavar="COLUMN", help="Column of the true labels")
    ] = "label",
) -> None:
    """Store the true label of each prediction id in FILE; the monitor joins them.

    Every label is checked before any is stored: one bad label stores nothing (exit 2).
    Ids that already have a label are counted as duplicates and skipped.
    """
    from shipyard.data import read_table
    from shipyard.errors import InvalidInputError
    from shipyard.monitoring.feedback import label_schema, parse_feedback

    frame = read_table(file, text_columns=(id_column,))
    missing = [c for c in (id_column, label_column) if c not in frame.columns]
    if missing:
        present = ", ".join(str(c) for c in frame.columns) or "none"
        raise InvalidInputError(
            f"{file} has no column {' or '.join(repr(c) for c in missing)} (its columns: "
            f"{present}); name them with --id-column and --label-column"
        )
    if frame.empty:
        raise InvalidInputError(f"{file} has no rows; nothing to send")
    with open_registry(ctx) as registry:
        name = model or _only_model(registry)
        labels = label_schema(registry, name)
        items = _items(frame, id_column, label_column)
        pairs = parse_feedback(items, labels)  # the whole file, before anything is stored
        chunk = settings_of(ctx).max_feedback_items
        accepted, duplicates = _send(registry, labels.model, pairs, chunk)
    summary = (
        f"{labels.model}: received {len(pairs):,} labels, accepted {accepted:,}, "
        f"{len(duplicates):,} duplicates"
    )
    if duplicates:
        shown = ", ".join(duplicates[:SHOWN_DUPLICATES])
        more = ", …" if len(duplicates) > SHOWN_DUPLICATES else ""
        summary += f" (already labelled, skipped: {shown}{more})"
    console.print(summary, soft_wrap=True)
    console.print(
        "unknown ids and ids older than the join window are counted when the monitor joins "
        f"labels to predictions: `shipyard monitor report {labels.model}`",
        soft_wrap=True,
    )


def _only_model(registry: Registry) -> str:
    from shipyard.errors import InvalidInputError

    names = [m.name for m in registry.list_models()]
    if len(names) == 1:
        return names[0]
    if not names:
        raise InvalidInputError("this home has no model; register one first")
    raise InvalidInputError(
        f"this home has {len(names)} models ({', '.join(names)}); say which with --model NAME"
    )


def _items(frame: pd.DataFrame, id_column: str, label_column: str) -> list[dict[str, Any]]:
    from shipyard.errors import InvalidInputError

    ids = frame[id_column]
    absent = ids.isna()
    if absent.any():
        row = int(absent.to_numpy().nonzero()[0][0])
        raise InvalidInputError(
            f"row {row + 1} has no {id_column!r}; every label needs the id of its prediction"
        )
    # Python values (tolist), so labels keep their JSON-like types: 1, True, 1.0, "yes".
    return [
        {"id": prediction_id, "label": label}
        for prediction_id, label in zip(
            ids.astype(str).tolist(), frame[label_column].tolist(), strict=True
        )
    ]


def _send(
    registry: Registry, model: str, pairs: list[tuple[str, str]], chunk: int
) -> tuple[int, list[str]]:
    """Store ``pairs`` in batches of ``chunk``, with a progress bar once it takes a while."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    accepted, duplicates = 0, []
    started = time.monotonic()
    bar = Progress(*columns, console=console, transient=True)
    task = bar.add_task(f"storing labels of {model}", total=len(pairs))
    try:
        for start in range(0, len(pairs), chunk):
            receipt = registry.monitoring.add_feedback(
                model, pairs[start : start + chunk], source="file"
            )
            accepted += receipt.accepted
            duplicates += receipt.duplicates
            bar.advance(task, receipt.received)
            if not bar.live.is_started and time.monotonic() - started > PROGRESS_AFTER_S:
                bar.start()
    finally:
        bar.stop()
    return accepted, duplicates

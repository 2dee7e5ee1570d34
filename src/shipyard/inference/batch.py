"""Scoring a whole table through a predictor in bounded batches, and finding the first value
that is no number (so a file's bad row is named before any row is scored)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from shipyard.errors import SchemaError
from shipyard.inference.predictor import Predictor, frame_to_features, outputs_to_frame

DEFAULT_BATCH_ROWS = 8192


def score_frame(
    predictor: Predictor,
    frame: pd.DataFrame,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Predict every row; the result keeps the input's non-feature columns (ids, labels)."""
    features = frame_to_features(frame, predictor)
    parts = []
    for start in range(0, len(features), batch_rows):
        chunk = features[start : start + batch_rows]
        parts.append(outputs_to_frame(predictor.predict(chunk)))
        if progress is not None:
            progress(len(chunk))
    feature_names = set(predictor.input_schema["features"])
    kept = frame[[c for c in frame.columns if c not in feature_names]].reset_index(drop=True)
    scored = pd.concat(parts, ignore_index=True) if parts else outputs_to_frame({})
    return pd.concat([kept, scored], axis=1)


@dataclass(frozen=True)
class NonNumber:
    """A feature value that is not a number: its row (0-based, in the table read), column
    and value."""

    row: int
    column: str
    value: Any


def first_non_number(frame: pd.DataFrame, features: Sequence[str]) -> NonNumber | None:
    """The first feature value, in row order, that is not a number; ``None`` if all are."""
    first: tuple[int, str] | None = None
    for name in features:
        if name not in frame.columns:
            continue  # missing columns are named all together by the predictor
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            continue
        # Text that spells a number ("1.5") converts, as the predictor converts it.
        bad = pd.to_numeric(column, errors="coerce").isna().to_numpy() & column.notna().to_numpy()
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            if first is None or index < first[0]:
                first = (index, name)
    if first is None:
        return None
    index, name = first
    return NonNumber(index, name, frame[name].iloc[index])


def check_numbers(frame: pd.DataFrame, features: Sequence[str], source: str | PurePath) -> None:
    """SchemaError naming the column, the row (1-based, and the line of a CSV or JSON Lines
    file) and the value of the first feature value, in file order, that is not a number;
    ``source`` names the file (its suffix tells how rows map to lines)."""
    bad = first_non_number(frame, features)
    if bad is not None:
        raise non_number_error(source, bad)


def non_number_error(path: str | PurePath, bad: NonNumber) -> SchemaError:
    """The error naming the column, the row (1-based, and the line of a CSV or JSON Lines
    file) and the value of ``bad``, whose ``row`` counts from the file's first row."""
    shown = repr(bad.value) if len(repr(bad.value)) <= 60 else f"{repr(bad.value)[:60]}…"
    # Line numbers of a text file: a CSV has its header line first; JSON Lines has none.
    suffix = PurePath(path).suffix.lower()
    line = {".csv": bad.row + 2, ".jsonl": bad.row + 1, ".ndjson": bad.row + 1}.get(suffix)
    where = f"row {bad.row + 1}" + (f" (line {line})" if line is not None else "")
    return SchemaError(
        f"{path}: feature {bad.column!r} in {where} must be a number, got {shown}; "
        "fix or drop that row"
    )

"""Feature values that must be numbers: the first one in a table that is not, named by its
row, line and column, before a predictor turns the table into a float matrix (whose error
could only say that some value somewhere was not a number)."""

from __future__ import annotations

from pathlib import PurePath

import numpy as np
import pandas as pd

from shipyard.errors import SchemaError


def check_numbers(frame: pd.DataFrame, features: list[str], source: str | PurePath) -> None:
    """SchemaError naming the column, the row (1-based, and the line of a CSV or JSON Lines
    file) and the value of the first feature value, in file order, that is not a number.
    ``source`` names the file (its suffix tells how rows map to lines)."""
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
        return
    index, name = first
    value = frame[name].iloc[index]
    shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:60]}…"
    # Line numbers of a text file: a CSV has its header line first; JSON Lines has none.
    suffix = PurePath(source).suffix.lower()
    line = {".csv": index + 2, ".jsonl": index + 1, ".ndjson": index + 1}.get(suffix)
    where = f"row {index + 1}" + (f" (line {line})" if line is not None else "")
    raise SchemaError(
        f"{source}: feature {name!r} in {where} must be a number, got {shown}; fix or drop that row"
    )

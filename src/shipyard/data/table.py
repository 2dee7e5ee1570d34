"""Reading and writing tables as CSV, Parquet or JSON Lines, chosen by the file's suffix."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from shipyard.data.schema import TableSchema
from shipyard.errors import InvalidInputError

#: What the CSV, Parquet and JSON parsers raise for a file that cannot be used as it is
#: (bad input comes through many exception types; all mean the same to the caller).
UNREADABLE: tuple[type[Exception], ...] = (
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    csv.Error,
    UnicodeDecodeError,
    pa.ArrowException,
    OSError,
    ValueError,
)

_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")
_JSONL = (".jsonl", ".ndjson")
SUPPORTED_SUFFIXES = _CSV + _PARQUET + _JSONL

_CHUNK = 1 << 20


def read_table(
    path: Path,
    schema: TableSchema | None = None,
    *,
    require_target: bool = True,
    text_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file (one object per line), validated against
    ``schema`` when one is given. ``text_columns`` of a CSV file are read as text (an id
    ``007`` stays ``007``, not the number 7)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"no such file: {path}")
    kind = _kind(path)
    if not path.is_file():
        raise InvalidInputError(f"not a file: {path}; give the path of a {kind} file")
    try:
        if kind == "CSV":
            frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str))
        elif kind == "Parquet":
            frame = pd.read_parquet(path)
        else:  # values keep their JSON types: an id "007" stays text
            frame = pd.read_json(path, lines=True, dtype=False)
    except UNREADABLE as error:
        reason = str(error).strip() or type(error).__name__
        raise InvalidInputError(
            f"cannot read {path} as {kind}: {reason}; check the file is a complete {kind} table"
        ) from error
    if schema is None:
        return frame
    return schema.validate_frame(frame, require_target=require_target)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV, Parquet or JSON Lines by suffix, creating parent folders."""
    path = Path(path)
    kind = _kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees half a file.
    partial = path.with_name(f".{path.name}.partial")
    try:
        if kind == "CSV":
            frame.to_csv(partial, index=False)
        elif kind == "Parquet":
            frame.to_parquet(partial, index=False)
        else:
            frame.to_json(partial, orient="records", lines=True)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError as error:
        raise InvalidInputError(f"no such file: {path}") from error
    except IsADirectoryError as error:
        raise InvalidInputError(f"not a file: {path}") from error
    return digest.hexdigest()


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _CSV:
        return "CSV"
    if suffix in _PARQUET:
        return "Parquet"
    if suffix in _JSONL:
        return "JSON Lines"
    raise InvalidInputError(
        f"unsupported file type {suffix or '(no suffix)'!r} for {path}; "
        f"use one of: {', '.join(SUPPORTED_SUFFIXES)}"
    )

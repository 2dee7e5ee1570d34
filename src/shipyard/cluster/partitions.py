"""A table file in partitions: planned by the client from the file's metadata, read by
workers, written back in order by the client.

A Parquet file is cut at its row groups; a CSV or JSON Lines file into byte ranges, each
holding the lines that start inside it (so the file is never read whole in one place). A
line break inside a quoted CSV field would be cut like any other: such files are scored
in-process.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.data.table import SUPPORTED_SUFFIXES, UNREADABLE
from shipyard.errors import InvalidInputError

#: Bytes of a text file read to estimate its bytes per row.
SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class FilePart:
    """One partition: row groups ``[start, stop)`` of a Parquet file, or the lines starting in
    bytes ``[start, stop)`` of a CSV (``header`` is its first line) or JSON Lines file;
    ``size`` is its weight in the plan's ``total`` (rows of Parquet, bytes of text)."""

    path: str
    kind: str
    number: int
    start: int
    stop: int
    size: int
    header: bytes = b""


@dataclass(frozen=True)
class FilePlan:
    """The partitions of a file, the columns its first line or schema names, and ``total``:
    its rows (Parquet, exact) or bytes (text formats), in the unit each part's ``size`` uses."""

    parts: list[FilePart]
    columns: list[str]
    unit: str
    total: int


def plan_file(path: Path, partition_rows: int) -> FilePlan:
    """Cut ``path`` into partitions of about ``partition_rows`` rows, reading only metadata
    (Parquet) or a sample of the start (CSV, JSON Lines)."""
    path = Path(path).resolve()
    if not path.exists():
        raise InvalidInputError(f"no such file: {path}")
    if not path.is_file():
        raise InvalidInputError(f"not a file: {path}")
    kind = _kind(path)
    if kind == "Parquet":
        return _plan_parquet(path, partition_rows)
    return _plan_text(path, kind, partition_rows)


def _plan_parquet(path: Path, partition_rows: int) -> FilePlan:
    try:
        metadata = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as error:
        raise InvalidInputError(
            f"cannot read {path} as Parquet: {error}; check the file is a complete Parquet table"
        ) from error
    parts: list[FilePart] = []
    start = rows = 0
    for group in range(metadata.num_row_groups):
        rows += metadata.row_group(group).num_rows
        if rows >= partition_rows or group == metadata.num_row_groups - 1:
            parts.append(FilePart(str(path), "Parquet", len(parts), start, group + 1, rows))
            start, rows = group + 1, 0
    if not parts:
        parts = [FilePart(str(path), "Parquet", 0, 0, 0, 0)]
    columns = [c for c in metadata.schema.to_arrow_schema().names if c != "__index_level_0__"]
    return FilePlan(parts, columns, "rows", metadata.num_rows)


def _plan_text(path: Path, kind: str, partition_rows: int) -> FilePlan:
    size = path.stat().st_size
    with path.open("rb") as file:
        header = file.readline() if kind == "CSV" else b""
        sample = file.read(SAMPLE_BYTES)
    lines = sample.count(b"\n") or 1
    step = max(1, len(sample) // lines * partition_rows) if sample else size or 1
    start = len(header)
    parts = [
        FilePart(str(path), kind, n, offset, end, end - offset, header)
        for n, offset in enumerate(range(start, size, step))
        for end in [min(offset + step, size)]
    ]
    if not parts:  # a header and no rows: one empty part, so the output has the header
        parts = [FilePart(str(path), kind, 0, start, start, 0, header)]
    if kind == "CSV":
        columns = next(csv.reader([header.decode("utf-8-sig", errors="replace")]), [])
    else:
        first = pd.read_json(io.BytesIO(sample.split(b"\n", 1)[0]), lines=True, dtype=False)
        columns = [str(c) for c in first.columns]
    return FilePlan(parts, columns, "bytes", size - len(header))


def read_part(part: FilePart) -> pd.DataFrame:
    """The rows of one partition, parsed as the whole file would be (``data.read_table``)."""
    path = Path(part.path)
    try:
        if part.kind == "Parquet":
            groups = list(range(part.start, part.stop))
            table = pq.ParquetFile(path).read_row_groups(groups)
            frame: pd.DataFrame = table.to_pandas()
            return frame.reset_index(drop=True)
        data = _lines_starting_in(path, part.start, part.stop)
        if part.kind == "CSV":
            return pd.read_csv(io.BytesIO(part.header + data))
        if not data.strip():
            return pd.DataFrame()
        return pd.read_json(io.BytesIO(data), lines=True, dtype=False)
    except FileNotFoundError as error:
        raise InvalidInputError(
            f"a Dask worker cannot read {path}: {error.strerror}; on a cluster of other "
            "machines the input must be at the same path on each (a shared folder)"
        ) from error
    except UNREADABLE as error:
        reason = str(error).strip() or type(error).__name__
        raise InvalidInputError(
            f"cannot read {path} as {part.kind} (bytes or row groups {part.start}–{part.stop}): "
            f"{reason}; check the file is a complete {part.kind} table"
        ) from error


def _lines_starting_in(path: Path, start: int, stop: int) -> bytes:
    """The bytes of the lines whose first byte lies in ``[start, stop)``."""
    with path.open("rb") as file:
        file.seek(max(start - 1, 0))
        if start > 0:
            file.readline()  # the end of the line before (only its b"\n" if one ends there)
        begin = file.tell()
        if begin >= stop:
            return b""
        file.seek(stop - 1)
        file.readline()
        end = file.tell()
        file.seek(begin)
        return file.read(end - begin)


@dataclass(frozen=True)
class EncodedPart:
    """Scored rows as the output file holds them, encoded where they were scored (on a
    worker, in parallel): CSV or JSON Lines text (``header``: the CSV header line), or an
    Arrow table for Parquet."""

    rows: int
    header: bytes = b""
    body: bytes = b""
    table: pa.Table | None = None


def encode_part(frame: pd.DataFrame, kind: str) -> EncodedPart:
    """``frame`` encoded as ``data.write_table`` writes a file of ``kind``."""
    if kind == "CSV":
        header = frame.iloc[:0].to_csv(index=False).encode()
        return EncodedPart(len(frame), header, frame.to_csv(index=False, header=False).encode())
    if kind == "JSON Lines":
        body = frame.to_json(orient="records", lines=True).encode() if len(frame) else b""
        return EncodedPart(len(frame), body=body)
    return EncodedPart(len(frame), table=pa.Table.from_pandas(frame, preserve_index=False))


class OrderedWriter:
    """Appends encoded partitions, in order, to one CSV, Parquet or JSON Lines file: the same
    bytes (CSV, JSON Lines) or the same table (Parquet) as ``data.write_table`` of them all."""

    def __init__(self, file: IO[bytes], kind: str) -> None:
        self._file = file
        self.kind = kind
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.rows = 0
        self._written = False

    def write(self, part: EncodedPart | pd.DataFrame) -> None:
        """Append a partition's rows (encoded, or a table to encode here)."""
        if isinstance(part, pd.DataFrame):
            part = encode_part(part, self.kind)
        if part.table is not None:
            self._write_parquet(part.table)
        else:
            if not self._written:
                self._file.write(part.header)
            self._file.write(part.body)
        self.rows += part.rows
        self._written = True

    def _write_parquet(self, table: pa.Table) -> None:
        if self._parquet is None:
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self._file, table.schema)
        elif not table.schema.equals(self._schema, check_metadata=False):
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise InvalidInputError(
                    f"a column's type changes along the input ({error}); write CSV output, "
                    "or score in-process (no --scheduler or --workers)"
                ) from error
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file (a Parquet footer)."""
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


def output_kind(path: Path) -> str:
    """``CSV``, ``Parquet`` or ``JSON Lines`` by the suffix; an unsupported one is refused."""
    return _kind(Path(path))


@contextmanager
def ordered_output(path: Path) -> Iterator[OrderedWriter]:
    """An ``OrderedWriter`` on a file beside ``path``, renamed to it only when all went well,
    so a reader never sees half a file and a failed run leaves none."""
    path = Path(path)
    kind = _kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as file:
            writer = OrderedWriter(file, kind)
            try:
                yield writer
            finally:  # a Parquet writer left open complains when collected
                writer.close()
        partial.replace(path)
    finally:
        with suppress(FileNotFoundError):
            partial.unlink()


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "Parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "JSON Lines"
    if suffix == ".csv":
        return "CSV"
    raise InvalidInputError(
        f"unsupported file type {suffix or '(no suffix)'!r} for {path}; "
        f"use one of: {', '.join(SUPPORTED_SUFFIXES)}"
    )

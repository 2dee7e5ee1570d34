"""The prediction log: what each model version predicted, for whom, from which features.

A record per prediction — ``id, model, version, time, source, latency_ms, score, label,
features`` — built per batch from numpy arrays (``prediction_table``), never row by row.
Stores (``PredictionLog``) write and read Arrow tables of one (model, version) each:

- ``ParquetLog`` (default): files under ``$SHIPYARD_HOME/predictions/``, partitioned
  ``model=NAME/version=V/hour=YYYY-MM-DDTHH/part-<uuid7>.parquet``. ``hour`` is the UTC hour
  the file was written — the rows' own hour, but for rows held back while the sink was down.
  Each file is written under a dot-name and renamed, so a reader never sees half a file;
  file names are UUIDv7 (time-ordered, unique per writer), so any number of processes write
  side by side.
- ``SqlLog``: a table in a SQL database (the registry's or another), features as JSON.

``read_new`` follows a log by *write batches* (files, or the ``batch`` column of SQL rows):
its cursor keeps the newest batch name seen and every batch name of the last
``grace_seconds`` before it, so a writer that named its batch first but put it in place
after another one is still read, once. A batch that takes longer than the grace period
between naming and landing could be missed; writes take milliseconds.

The schema, ``prediction_table``, the protocol and ``BatchCursor`` live in
``monitoring/records.py`` and are re-exported here; ``SqlLog`` lives in ``monitoring/sql.py``
(imported only when the settings name a database); ``PredictionRecorder``
(``monitoring/recorder.py``) is the hot-path side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shipyard.errors import InvalidInputError, PredictionLogError
from shipyard.monitoring.records import (
    BASE_FIELDS,
    DEFAULT_GRACE_SECONDS,
    HTTP,
    NEWEST_COLUMNS,
    SOURCES,
    STREAM,
    TIME_TYPE,
    BatchCursor,
    PredictionLog,
    batch_name,
    name_floor,
    name_millis,
    prediction_table,
    schema,
    score_and_label,
    single_version,
)
from shipyard.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_FIELDS",
    "DEFAULT_GRACE_SECONDS",
    "DICTIONARY_COLUMNS",
    "HTTP",
    "NEWEST_COLUMNS",
    "PART_PREFIX",
    "SOURCES",
    "STREAM",
    "TIME_TYPE",
    "BatchCursor",
    "ParquetLog",
    "PredictionLog",
    "batch_name",
    "cutoff",
    "name_floor",
    "name_millis",
    "open_prediction_log",
    "prediction_table",
    "schema",
    "score_and_label",
    "single_version",
]

PART_PREFIX = "part-"
DICTIONARY_COLUMNS = ["model", "version", "source", "label"]
"""Columns of few distinct values; ids, times and features are written plain (trying a
dictionary on them doubled the write's cost and made bigger files)."""
STATISTICS_COLUMNS = ["id", "version", "time"]
"""Columns whose row groups carry min/max statistics (what a scan filters on); those of the
features cost a fifth of a write and no reader uses them."""
COMPRESSION = "snappy"
"""Parquet's usual codec. zstd made 12 % smaller files but cost twice the CPU a row, and
~0.8 ms a file to set up, on the stream scorer's writer thread (whose core the scorer
shares): 3.3 ms against 1.5 ms for a 5,120-row write."""
_HOUR_FORMAT = "%Y-%m-%dT%H"
_NAME = re.compile(r"^part-([0-9a-f]{32})\.parquet$")


# -- Parquet files ------------------------------------------------------------------------


def _hour(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_HOUR_FORMAT)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


class ParquetLog:
    """The prediction log as Parquet files under a folder, one file per write."""

    def __init__(self, root: Path, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.root = Path(root)
        self.grace_seconds = grace_seconds

    def _model_dir(self, model: str) -> Path:
        if not model or "/" in model or model.startswith("."):
            raise InvalidInputError(f"{model!r} is not a model name the log can store")
        return self.root / f"model={model}"

    def write(self, batch: pa.Table) -> None:
        """Write the batch as one new file, whole or not at all."""
        model, version = single_version(batch)
        name = batch_name()
        written = datetime.fromtimestamp(name_millis(name) / 1000, UTC)
        folder = self._model_dir(model) / f"version={version}" / f"hour={_hour(written)}"
        final = folder / f"{PART_PREFIX}{name}.parquet"
        temporary = folder / f".{final.name}.tmp"
        try:
            # Encoded in memory and written with one call: the file writer's many small
            # writes cost a sixth of the write.
            encoded = pa.BufferOutputStream()
            pq.write_table(
                batch,
                encoded,
                compression=COMPRESSION,
                use_dictionary=DICTIONARY_COLUMNS,
                write_statistics=STATISTICS_COLUMNS,
            )
            folder.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(encoded.getvalue())
            temporary.replace(final)
        except OSError as error:
            if folder.exists():
                temporary.unlink(missing_ok=True)
            raise PredictionLogError(
                f"cannot write the prediction log under {self.root} ({error}); check that the "
                "folder exists, is writable and has space"
            ) from error

    def _versions(self, model: str, version: int | None) -> dict[int, Path]:
        found: dict[int, Path] = {}
        try:
            entries = list(os.scandir(self._model_dir(model)))
        except FileNotFoundError:
            return found
        except OSError as error:
            raise PredictionLogError(f"cannot read the prediction log ({error})") from error
        for entry in entries:
            key, _, value = entry.name.partition("=")
            if key == "version" and value.isdigit() and (version is None or int(value) == version):
                found[int(value)] = Path(entry.path)
        return found

    def _files(self, folder: Path, first_hour: str | None) -> list[tuple[str, Path]]:
        """(batch name, path) of the files in the hours of a version folder from
        ``first_hour`` on, oldest name first."""
        files: list[tuple[str, Path]] = []
        try:
            hours = [e for e in os.scandir(folder) if e.name.startswith("hour=")]
            for hour in hours:
                if first_hour is not None and hour.name[len("hour=") :] < first_hour:
                    continue
                for entry in os.scandir(hour.path):
                    match = _NAME.match(entry.name)
                    if match:
                        files.append((match.group(1), Path(entry.path)))
        except FileNotFoundError:
            pass  # expired meanwhile
        except OSError as error:
            raise PredictionLogError(f"cannot read the prediction log ({error})") from error
        return sorted(files)

    @staticmethod
    def _read(paths: Iterable[Path], columns: Sequence[str] | None = None) -> pa.Table | None:
        tables = []
        for path in paths:
            try:
                tables.append(
                    pq.read_table(path, columns=None if columns is None else list(columns))
                )
            except FileNotFoundError:
                continue  # expired between listing and reading
            except pa.ArrowInvalid as error:
                # Files land whole (written aside, then renamed), so this one was damaged
                # afterwards (a copy cut short, a disk error): failing on it would stop the
                # model's monitoring for good, at every restart. Its rows are lost.
                logger.warning(
                    "skipped %s, which is not a readable Parquet file (%s); move it away "
                    "or delete it",
                    path,
                    error,
                )
            except OSError as error:
                raise PredictionLogError(f"cannot read {path} ({error})") from error
        return _concat(tables) if tables else None

    def read_new(
        self, model: str, cursor: Mapping[str, Any] | None
    ) -> tuple[dict[int, pa.Table], dict[str, Any]]:
        """Rows of the files written since ``cursor``, per version."""
        position = BatchCursor.load(cursor)
        floor = position.floor(self.grace_seconds)
        first_hour = None
        if floor is not None:
            first_hour = _hour(datetime.fromtimestamp(name_millis(floor) / 1000, UTC))
        found: dict[int, pa.Table] = {}
        seen: list[str] = []
        for version, folder in sorted(self._versions(model, None).items()):
            files = [
                (name, path)
                for name, path in self._files(folder, first_hour)
                if position.is_new(name, self.grace_seconds)
            ]
            table = self._read(path for _, path in files)
            seen += [name for name, _ in files]
            if table is not None:
                found[version] = table
        return found, position.advance(seen, self.grace_seconds).dump()

    def scan(
        self,
        model: str,
        *,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[int, pa.Table]:
        """Every retained row of ``model`` (of one version), with since <= time < until."""
        # A file's hour is when it was written, never before its rows: older hours hold
        # no row at or after ``since``.
        first_hour = _hour(since) if since is not None else None
        found: dict[int, pa.Table] = {}
        for number, folder in sorted(self._versions(model, version).items()):
            table = self._read(path for _, path in self._files(folder, first_hour))
            if table is None:
                continue
            table = _between(table, since, until)
            if table.num_rows:
                found[number] = table
        return found

    def newest_first(
        self, model: str, *, since: datetime | None = None
    ) -> Iterator[tuple[datetime, dict[int, pa.Table]]]:
        """The rows with ``since <= time``, an hour folder at a time, newest first; a
        folder's floor is the start of its hour (rows are written after they are made, so
        older folders hold older rows)."""
        first_hour = _hour(since) if since is not None else None
        hours: dict[str, dict[int, Path]] = {}
        for number, folder in self._versions(model, None).items():
            for hour in _entries(str(folder)):
                name = hour.name[len("hour=") :]
                if hour.name.startswith("hour=") and (first_hour is None or name >= first_hour):
                    hours.setdefault(name, {})[number] = Path(hour.path)
        for name in sorted(hours, reverse=True):
            found: dict[int, pa.Table] = {}
            for number, folder in sorted(hours[name].items()):
                paths = sorted(Path(e.path) for e in _entries(str(folder)) if _NAME.match(e.name))
                table = self._read(paths, NEWEST_COLUMNS)
                if table is not None:
                    table = _between(table, since, None)
                    if table.num_rows:
                        found[number] = table
            floor = datetime.strptime(name, _HOUR_FORMAT).replace(tzinfo=UTC)
            yield floor, found

    def expire(self, before: datetime) -> int:
        """Remove the files of every hour that ended before ``before``; returns how many."""
        removed = 0
        cutoff = _hour(before)
        try:
            models = [e for e in os.scandir(self.root) if e.name.startswith("model=")]
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise PredictionLogError(f"cannot read the prediction log ({error})") from error
        # Another monitor may expire the same folders at once: whatever vanished
        # meanwhile is gone already, which is what expiry wants.
        for model in models:
            for version in _entries(model.path):
                for hour in _entries(version.path):
                    if not hour.name.startswith("hour=") or hour.name[5:] >= cutoff:
                        continue
                    for entry in _entries(hour.path):
                        try:
                            Path(entry.path).unlink()
                        except FileNotFoundError:
                            continue
                        except OSError as error:
                            raise PredictionLogError(
                                f"cannot remove {entry.path} ({error})"
                            ) from error
                        removed += entry.name.startswith(PART_PREFIX)
                    with contextlib.suppress(OSError):  # a writer put a file there meanwhile
                        Path(hour.path).rmdir()
        return removed

    def close(self) -> None:
        """Nothing to release."""


def _entries(folder: str) -> list[os.DirEntry[str]]:
    """The entries of a folder; none when it vanished (or is no folder)."""
    try:
        return list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:
        raise PredictionLogError(f"cannot read the prediction log ({error})") from error


def _between(table: pa.Table, since: datetime | None, until: datetime | None) -> pa.Table:
    if since is None and until is None:
        return table
    times = table.column("time")
    keep = None
    if since is not None:
        keep = pc.greater_equal(times, pa.scalar(since.astimezone(UTC), TIME_TYPE))
    if until is not None:
        before = pc.less(times, pa.scalar(until.astimezone(UTC), TIME_TYPE))
        keep = before if keep is None else pc.and_(keep, before)
    return table.filter(keep)


def cutoff(retention_days: float, now: datetime | None = None) -> datetime:
    """The time before which a retention of ``retention_days`` removes records."""
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)


def open_prediction_log(settings: Settings) -> PredictionLog | None:
    """The store the settings name: Parquet under the home (default), a SQL database, or
    None when ``prediction_log`` is ``off``."""
    kind = settings.prediction_log
    if kind == "off":
        return None
    if kind == "parquet":
        return ParquetLog(settings.prediction_log_path)
    from shipyard.monitoring.sql import SqlLog  # SQLAlchemy only for the SQL store

    return SqlLog(settings.database_url if kind == "database" else kind)

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

``PredictionRecorder`` (``monitoring/recorder.py``) is the hot-path side; ``SqlLog`` lives in
``monitoring/sql.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shipyard.errors import ConfigurationError, InvalidInputError, PredictionLogError
from shipyard.inference.predictor import Outputs
from shipyard.monitoring.ids import new_id
from shipyard.settings import Settings

logger = logging.getLogger(__name__)

HTTP = "http"
STREAM = "stream"
SOURCES = (HTTP, STREAM)
DEFAULT_GRACE_SECONDS = 120.0
TIME_TYPE = pa.timestamp("us", tz="UTC")
BASE_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("model", pa.string()),
    pa.field("version", pa.int32()),
    pa.field("time", TIME_TYPE),
    pa.field("source", pa.string()),
    pa.field("latency_ms", pa.float32()),
    pa.field("score", pa.float64()),
    pa.field("label", pa.string()),
]
PART_PREFIX = "part-"
DICTIONARY_COLUMNS = ["model", "version", "source", "label"]
"""Columns of few distinct values; ids, times and features are written plain (trying a
dictionary on them doubled the write's cost and made bigger files)."""
_HOUR_FORMAT = "%Y-%m-%dT%H"
_NAME = re.compile(r"^part-([0-9a-f]{32})\.parquet$")


def schema(names: Sequence[str]) -> pa.Schema:
    """The log's schema for a version whose features are ``names``, in layout order."""
    features = pa.struct([pa.field(name, pa.float32()) for name in names])
    return pa.schema([*BASE_FIELDS, pa.field("features", features)])


# -- building records ---------------------------------------------------------------------


def score_and_label(outputs: Outputs) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    """One score and one label per row, whatever the model's task: P(positive class) for a
    binary classifier, the predicted class's probability for a multi-class one, the
    prediction of a regressor (which has no label: ``None``)."""
    if "probability" in outputs:
        return outputs["probability"], outputs["label"]
    if "probabilities" in outputs:
        return outputs["probabilities"].max(axis=1), outputs["label"]
    return next(iter(outputs.values())).reshape(-1), None


def _labels_as_text(labels: npt.NDArray[Any] | None, rows: int) -> pa.Array:
    if labels is None:
        return pa.nulls(rows, pa.string())
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int8)  # "0"/"1", as the class is written in the data
    if labels.dtype.kind in "iuf":
        return pa.array(labels).cast(pa.string())
    return pa.array(labels.astype(str), pa.string())


def prediction_table(
    model: str,
    version: int,
    source: str,
    ids: Sequence[str],
    names: Sequence[str],
    features: npt.NDArray[Any],
    outputs: Outputs,
    latency_ms: float | npt.NDArray[Any],
    time: datetime | npt.NDArray[Any] | None = None,
) -> pa.Table:
    """The log records of one batch of predictions of one version, column by column.

    ``time`` is one time for the batch (default now) or one per row (datetime64 in UTC)."""
    rows = len(ids)
    if features.shape != (rows, len(names)):
        raise InvalidInputError(
            f"{rows} ids but features of shape {list(features.shape)} for {len(names)} names"
        )
    if source not in SOURCES:
        raise InvalidInputError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    score, labels = score_and_label(outputs)
    if isinstance(time, np.ndarray):
        times = pa.array(time.astype("datetime64[us]"), TIME_TYPE)
    else:
        when = time or datetime.now(UTC)
        micros = int(when.timestamp() * 1_000_000)
        times = pa.array(np.full(rows, micros, dtype="datetime64[us]"), TIME_TYPE)
    columns = np.ascontiguousarray(features.T, dtype=np.float32)
    struct = pa.StructArray.from_arrays(
        [pa.array(column) for column in columns],
        fields=[pa.field(name, pa.float32()) for name in names],
    )
    latency = np.broadcast_to(np.asarray(latency_ms, dtype=np.float32), (rows,))
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.repeat(pa.scalar(model, pa.string()), rows),
            pa.array(np.full(rows, version, dtype=np.int32)),
            times,
            pa.repeat(pa.scalar(source, pa.string()), rows),
            pa.array(latency),
            pa.array(np.asarray(score, dtype=np.float64).reshape(-1)),
            _labels_as_text(labels, rows),
            struct,
        ],
        schema=schema(names),
    )


# -- the store protocol -------------------------------------------------------------------


class PredictionLog(Protocol):
    """A prediction-log store: write batches, read what is new, scan, expire."""

    def write(self, batch: pa.Table) -> None:
        """Store rows of one (model, version); ``PredictionLogError`` when the sink is
        unavailable (nothing of the batch is visible then)."""
        ...

    def read_new(
        self, model: str, cursor: Mapping[str, Any] | None
    ) -> tuple[dict[int, pa.Table], dict[str, Any]]:
        """Rows written since ``cursor`` (None: since the beginning), per version, and the
        cursor to pass next time (JSON-ready)."""
        ...

    def scan(
        self,
        model: str,
        *,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[int, pa.Table]:
        """Every retained row of ``model`` (of one version), with since <= time < until."""
        ...

    def expire(self, before: datetime) -> int:
        """Remove what was logged before ``before``; returns the files or rows removed."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def single_version(batch: pa.Table) -> tuple[str, int]:
    """The (model, version) of a batch, which must hold rows of exactly one."""
    if batch.num_rows == 0:
        raise InvalidInputError("an empty batch has no model version to log")
    models = pc.unique(batch.column("model"))
    versions = pc.unique(batch.column("version"))
    if len(models) != 1 or len(versions) != 1:
        raise InvalidInputError("a batch of the prediction log holds rows of one model version")
    return str(models[0].as_py()), int(versions[0].as_py())


# -- following write batches --------------------------------------------------------------


def batch_name() -> str:
    """A new write batch's name: 32 hex digits of a UUIDv7, ordered by time."""
    return new_id().replace("-", "")


def name_millis(name: str) -> int:
    """The Unix time in milliseconds at which a batch name was made."""
    return int(name[:12], 16)


def name_floor(millis: int) -> str:
    """The smallest batch name made at or after ``millis``."""
    return f"{max(millis, 0):012x}" + "0" * 20


@dataclass(frozen=True)
class BatchCursor:
    """Where a reader is in a log of named write batches."""

    newest: str | None
    recent: frozenset[str]

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None) -> BatchCursor:
        """From the JSON form (None: the beginning)."""
        if not cursor:
            return cls(None, frozenset())
        newest = cursor.get("newest")
        recent = cursor.get("recent", [])
        if (newest is not None and not isinstance(newest, str)) or not isinstance(recent, list):
            raise InvalidInputError(f"not a prediction-log cursor: {dict(cursor)!r:.200}")
        return cls(newest, frozenset(str(name) for name in recent))

    def floor(self, grace_seconds: float) -> str | None:
        """The oldest batch name that may still be new to this reader."""
        if self.newest is None:
            return None
        return name_floor(name_millis(self.newest) - int(grace_seconds * 1000))

    def is_new(self, name: str, grace_seconds: float) -> bool:
        """Whether a batch was not read yet."""
        floor = self.floor(grace_seconds)
        return (floor is None or name >= floor) and name not in self.recent

    def advance(self, seen: Iterable[str], grace_seconds: float) -> BatchCursor:
        """The cursor after reading the batches ``seen`` (those at or after the floor)."""
        names = set(self.recent) | set(seen)
        if not names:
            return self
        newest = max(names)
        floor = name_floor(name_millis(newest) - int(grace_seconds * 1000))
        return BatchCursor(newest, frozenset(n for n in names if n >= floor))

    def dump(self) -> dict[str, Any]:
        """The JSON form."""
        return {"newest": self.newest, "recent": sorted(self.recent)}


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
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(batch, temporary, compression="zstd", use_dictionary=DICTIONARY_COLUMNS)
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
    def _read(paths: Iterable[Path]) -> pa.Table | None:
        tables = []
        for path in paths:
            try:
                tables.append(pq.read_table(path))
            except FileNotFoundError:
                continue  # expired between listing and reading
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
        for model in models:
            for version in os.scandir(model.path):
                for hour in os.scandir(version.path):
                    if not hour.name.startswith("hour=") or hour.name[5:] >= cutoff:
                        continue
                    for entry in os.scandir(hour.path):
                        Path(entry.path).unlink(missing_ok=True)
                        removed += entry.name.startswith(PART_PREFIX)
                    with contextlib.suppress(OSError):  # a writer put a file there meanwhile
                        Path(hour.path).rmdir()
        return removed

    def close(self) -> None:
        """Nothing to release."""


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
    raise ConfigurationError(f"prediction_log={kind!r}: the SQL store is not built yet")

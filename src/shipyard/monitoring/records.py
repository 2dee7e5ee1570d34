"""What the prediction log records, and how a reader follows its write batches.

The record schema and ``prediction_table`` (one batch of predictions, built from numpy
arrays), the ``PredictionLog`` protocol every store implements, and ``BatchCursor``: where a
reader is in a log of write batches named by UUIDv7 (Parquet files, or the ``batch`` column
of SQL rows). ``monitoring/log.py`` re-exports all of it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.errors import InvalidInputError
from shipyard.inference.predictor import Outputs
from shipyard.monitoring.ids import new_id

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


def schema(names: Sequence[str]) -> pa.Schema:
    """The log's schema for a version whose features are ``names``, in layout order."""
    return _schema(tuple(names))


@functools.lru_cache(maxsize=64)
def _schema(names: tuple[str, ...]) -> pa.Schema:
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
    # One Arrow array of the columns end to end, sliced: no copy when ``features`` is the
    # transpose of a C-ordered float32 matrix, as the recorder builds it.
    columns = np.ascontiguousarray(features.T, dtype=np.float32)
    values = pa.array(columns.reshape(-1))
    table_schema = schema(names)
    struct = pa.StructArray.from_arrays(
        [values.slice(i * rows, rows) for i in range(len(names))],
        fields=list(table_schema.field("features").type),
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
        schema=table_schema,
    )


#: The columns ``PredictionLog.newest_first`` reads: enough to join labels to features.
NEWEST_COLUMNS = ("id", "time", "features")


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

    def newest_first(
        self, model: str, *, since: datetime | None = None
    ) -> Iterator[tuple[datetime, dict[int, pa.Table]]]:
        """The retained rows of ``model`` with ``since <= time``, newest first, a bounded
        chunk at a time, with only the columns ``NEWEST_COLUMNS``: each chunk (per version)
        comes with a floor every row of the later chunks is older than, so a reader that
        has what it needs above the floor stops reading."""
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


def batch_name(millis: int | None = None) -> str:
    """A new write batch's name: 32 hex digits of a UUIDv7, ordered by time; made at
    ``millis`` (Unix milliseconds of another clock, such as the database's) if given."""
    name = new_id().replace("-", "")
    return name if millis is None else f"{max(millis, 0):012x}{name[12:]}"


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

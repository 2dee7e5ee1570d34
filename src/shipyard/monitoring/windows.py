"""The live rows of one model version, and the windows the monitor judges over them.

``VersionRows`` keeps, per version, the rows of the prediction log that some window still
needs: the last ``rows`` predictions (count window) and every prediction of the last
``minutes`` (time window), in prediction-time order, as numpy columns. ``JoinIndex`` maps a
prediction id to what a label is joined to, for the feedback window, bounded in count.
Times are integer microseconds since the epoch (UTC), as the log stores them.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How many ids that left it the join index remembers, whatever its size.
GONE_ROWS = 1_000_000


@dataclass(frozen=True)
class LogRows:
    """Rows of the prediction log of one version, as columns."""

    ids: npt.NDArray[np.object_]
    times: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    labels: npt.NDArray[np.object_]  # predicted label as text, None for regressors
    features: npt.NDArray[np.float32]  # rows × len(names)
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, names: tuple[str, ...] = ()) -> LogRows:
        """No rows, with these feature names."""
        return cls(
            np.empty(0, dtype=object),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.float64),
            np.empty(0, dtype=object),
            np.empty((0, len(names)), dtype=np.float32),
            names,
        )

    @classmethod
    def from_table(cls, table: pa.Table) -> LogRows:
        """Columns of a log table (the Parquet schema of ``monitoring/log.py``)."""
        features = table.column("features").combine_chunks()
        if isinstance(features, pa.ChunkedArray):  # no chunks at all
            features = pa.concat_arrays(features.chunks) if features.chunks else None
        names = tuple(f.name for f in table.schema.field("features").type)
        if len(table) and names:
            assert features is not None
            matrix = np.column_stack(
                [
                    pc.fill_null(features.field(i), np.nan)
                    .to_numpy(zero_copy_only=False)
                    .astype(np.float32, copy=False)
                    for i in range(len(names))
                ]
            )
        else:
            matrix = np.empty((len(table), len(names)), dtype=np.float32)
        times = pc.cast(table.column("time"), pa.timestamp("us", "UTC")).cast(pa.int64())
        scores = pc.fill_null(pc.cast(table.column("score"), pa.float64()), np.nan)
        return cls(
            np.asarray(table.column("id").to_pylist(), dtype=object),
            times.to_numpy().astype(np.int64, copy=False),
            scores.to_numpy().astype(np.float64, copy=False),
            np.asarray(table.column("label").to_pylist(), dtype=object),
            matrix,
            names,
        )

    def take(self, keep: npt.NDArray[Any]) -> LogRows:
        """The rows a boolean mask or an index array selects."""
        return LogRows(
            self.ids[keep],
            self.times[keep],
            self.scores[keep],
            self.labels[keep],
            self.features[keep],
            self.names,
        )

    def concat(self, other: LogRows) -> LogRows:
        """These rows then ``other``'s, in time order (features aligned by name)."""
        if not len(self):
            merged = other
        elif not len(other):
            return self
        else:
            merged = LogRows(
                np.concatenate([self.ids, other.ids]),
                np.concatenate([self.times, other.times]),
                np.concatenate([self.scores, other.scores]),
                np.concatenate([self.labels, other.labels]),
                np.concatenate([self.features, other.aligned(self.names)]),
                self.names,
            )
        order = np.argsort(merged.times, kind="stable")
        return merged.take(order)

    def aligned(self, names: tuple[str, ...]) -> npt.NDArray[np.float32]:
        """The feature matrix with columns in ``names`` order (NaN for a missing feature)."""
        if names == self.names:
            return self.features
        position = {name: i for i, name in enumerate(self.names)}
        out = np.full((len(self), len(names)), np.nan, dtype=np.float32)
        for j, name in enumerate(names):
            if name in position:
                out[:, j] = self.features[:, position[name]]
        return out


@dataclass(frozen=True)
class Window:
    """One window's rows and its bounds."""

    kind: str  # "rows" | "time"
    rows: LogRows
    start_us: int | None
    end_us: int | None
    full: bool  # whether it may give a verdict (count window full, time window big enough)

    def bounds(self) -> dict[str, Any]:
        """Start and end as ISO times, and the row count."""
        return {
            "kind": self.kind,
            "start": _iso(self.start_us),
            "end": _iso(self.end_us),
            "rows": len(self.rows),
            "full": self.full,
        }


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return (EPOCH + timedelta(microseconds=int(us))).isoformat()


@dataclass
class VersionRows:
    """The rows one version's windows need; older ones are dropped by ``trim``."""

    window_rows: int
    window_minutes: float
    min_rows: int
    rows: LogRows = field(default_factory=LogRows.empty)
    seen: int = 0  # predictions added since the monitor started on this version

    def add(self, new: LogRows) -> None:
        """New rows from the log (any order)."""
        if not len(new):
            return
        self.rows = (LogRows.empty(new.names) if not len(self.rows) else self.rows).concat(new)
        self.seen += len(new)

    def trim(self, now_us: int) -> None:
        """Keep the last ``window_rows`` rows and every row of the time window."""
        n = len(self.rows)
        if n <= self.window_rows:
            return
        cutoff = now_us - int(self.window_minutes * 60 * US)
        first_recent = int(np.searchsorted(self.rows.times, cutoff, side="left"))
        keep_from = min(n - self.window_rows, first_recent)
        if keep_from > 0:
            self.rows = self.rows.take(slice(keep_from, None))  # type: ignore[arg-type]

    def count_window(self) -> Window:
        """The last ``window_rows`` predictions; full once that many arrived."""
        rows = self.rows.take(slice(max(0, len(self.rows) - self.window_rows), None))  # type: ignore[arg-type]
        return Window("rows", rows, *_span(rows), full=len(rows) >= self.window_rows)

    def time_window(self, now_us: int) -> Window:
        """The predictions of the last ``window_minutes``; full with ``min_rows`` rows."""
        start = now_us - int(self.window_minutes * 60 * US)
        first = int(np.searchsorted(self.rows.times, start, side="left"))
        rows = self.rows.take(slice(first, None))  # type: ignore[arg-type]
        return Window("time", rows, start, now_us, full=len(rows) >= self.min_rows)


def _span(rows: LogRows) -> tuple[int | None, int | None]:
    if not len(rows):
        return None, None
    return int(rows.times[0]), int(rows.times[-1])


@dataclass(frozen=True, slots=True)
class Prediction:
    """What feedback is joined to."""

    version: int
    time_us: int
    score: float
    label: str | None


class JoinIndex:
    """Prediction id → ``Prediction`` for the feedback window, at most ``max_rows`` ids.

    Ids that leave (too old, or pushed out by newer ones) are remembered — the last
    ``gone_rows`` of them, with their version and time — so their feedback is told ``late``
    rather than ``unknown``. Within the feedback window an id already logged for a version
    is that version's prediction: the same row read twice (a rebuild overlapping the log
    cursor) or redelivered by a broker (the scorer stamps a new time when it writes the
    record again) counts once. An id logged by another version, or again after the window,
    is a client reusing it for a new prediction: the newer prediction takes the id.
    """

    def __init__(self, max_rows: int, window_us: int, gone_rows: int = GONE_ROWS) -> None:
        self.max_rows = max_rows
        self.gone_rows = gone_rows
        self.window_us = window_us
        self._live: OrderedDict[str, Prediction] = OrderedDict()
        self._gone: OrderedDict[str, tuple[int, int]] = OrderedDict()  # id → (version, time)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, prediction_id: object) -> bool:
        return prediction_id in self._live

    def get(self, prediction_id: str) -> Prediction | None:
        """The prediction with this id, if it is still in the window."""
        return self._live.get(prediction_id)

    def left(self, prediction_id: str) -> bool:
        """Whether this id was in the index and left it (its feedback is late)."""
        return prediction_id in self._gone

    def add(self, version: int, rows: LogRows) -> npt.NDArray[np.bool_]:
        """Index rows (in time order); returns which of them are new predictions."""
        ids = rows.ids.tolist()
        live, gone = self._live, self._gone
        predictions = map(
            Prediction,
            itertools.repeat(version),
            rows.times.tolist(),
            rows.scores.tolist(),
            rows.labels.tolist(),
        )
        unique = len(set(ids)) == len(ids)
        if unique and live.keys().isdisjoint(ids) and gone.keys().isdisjoint(ids):
            live.update(zip(ids, predictions, strict=True))  # the usual case: all new, in bulk
            return np.ones(len(ids), dtype=np.bool_)
        new = np.zeros(len(ids), dtype=np.bool_)
        for i, (pid, prediction) in enumerate(zip(ids, predictions, strict=True)):
            known = live.get(pid)
            if known is not None:
                if self._same(known.version, known.time_us, prediction):
                    continue
                del live[pid]  # a client reused the id: the newer prediction takes it
            else:
                left = gone.get(pid)
                if left is not None:
                    if self._same(*left, prediction):
                        continue
                    del gone[pid]
            live[pid] = prediction
            new[i] = True
        return new

    def _same(self, version: int, time_us: int, prediction: Prediction) -> bool:
        return version == prediction.version and abs(prediction.time_us - time_us) <= self.window_us

    def evict(self, now_us: int) -> int:
        """Drop ids older than the window, then the oldest beyond ``max_rows``."""
        cutoff = now_us - self.window_us
        dropped = 0
        live = self._live
        while live:
            pid, prediction = next(iter(live.items()))
            if prediction.time_us >= cutoff and len(live) <= self.max_rows:
                break
            live.popitem(last=False)
            self._forget(pid, prediction)
            dropped += 1
        return dropped

    def _forget(self, pid: str, prediction: Prediction) -> None:
        self._gone[pid] = (prediction.version, prediction.time_us)
        self._gone.move_to_end(pid)
        if len(self._gone) > self.gone_rows:
            self._gone.popitem(last=False)

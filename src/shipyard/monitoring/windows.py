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
from dataclasses import dataclass
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
#: Slices of the time window (its start is rounded up to a slice: 1/16 of its minutes).
SLICES = 16
#: The time window keeps this many times the count window's rows at most, by default.
SAMPLE_FACTOR = 10


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
        merged = self.stacked(other)
        return merged if len(merged) < 2 else merged.take(np.argsort(merged.times, kind="stable"))

    def stacked(self, other: LogRows) -> LogRows:
        """These rows then ``other``'s, in that order (features aligned by name)."""
        if not len(other):
            return self
        if not len(self):
            return other
        return LogRows(
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.times, other.times]),
            np.concatenate([self.scores, other.scores]),
            np.concatenate([self.labels, other.labels]),
            np.concatenate([self.features, other.aligned(self.names)]),
            self.names,
        )

    def replaced(self, positions: npt.NDArray[np.intp], other: LogRows) -> LogRows:
        """A copy with the rows at ``positions`` replaced by ``other``'s, in order."""
        ids, times, scores = self.ids.copy(), self.times.copy(), self.scores.copy()
        labels, features = self.labels.copy(), self.features.copy()
        ids[positions] = other.ids
        times[positions] = other.times
        scores[positions] = other.scores
        labels[positions] = other.labels
        features[positions] = other.aligned(self.names)
        return LogRows(ids, times, scores, labels, features, self.names)

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
    rows: LogRows  # every row of the window, or a uniform sample of them (``sampled``)
    start_us: int | None
    end_us: int | None
    full: bool  # whether it may give a verdict (count window full, time window big enough)
    total: int | None = None  # the window's true row count when ``rows`` is a sample

    @property
    def sampled(self) -> bool:
        """Whether ``rows`` is a sample of the window rather than all of it."""
        return self.total is not None and self.total > len(self.rows)

    def bounds(self) -> dict[str, Any]:
        """Start and end as ISO times, the row count, and the sample's size if sampled."""
        bounds = {
            "kind": self.kind,
            "start": _iso(self.start_us),
            "end": _iso(self.end_us),
            "rows": self.total if self.total is not None else len(self.rows),
            "full": self.full,
            "sampled": self.sampled,
        }
        if self.sampled:
            bounds["sample_rows"] = len(self.rows)
        return bounds


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return (EPOCH + timedelta(microseconds=int(us))).isoformat()


@dataclass
class _Slice:
    """The rows of one slice of time: how many, and a uniform sample of them."""

    count: int
    rows: LogRows  # every row while ``count`` <= the sample size, else a reservoir


class VersionRows:
    """The rows one version's windows need, in bounded memory.

    The count window is exact: the last ``window_rows`` predictions by time. The time window
    is the last ``window_minutes`` in ``SLICES`` slices of time (its start is rounded up to a
    slice boundary: it spans between 15/16 of the minutes and all of them). Each slice
    counts its rows exactly and keeps at most ``sample_rows`` of them, a uniform reservoir
    sample (algorithm R); the window is every row while it has at most ``sample_rows``,
    else a sample of that many, drawn from the slices in proportion to their counts, and
    ``Window.total`` tells the true count. Memory is at most ``SLICES × sample_rows`` rows
    per version whatever the traffic; drift runs on at most ``sample_rows`` rows.
    """

    def __init__(
        self,
        window_rows: int,
        window_minutes: float,
        min_rows: int,
        sample_rows: int | None = None,
        seed: int = 0,
    ) -> None:
        self.window_rows = window_rows
        self.window_minutes = window_minutes
        self.min_rows = min_rows
        self.sample_rows = sample_rows or max(SAMPLE_FACTOR * window_rows, min_rows)
        self.window_us = max(1, int(window_minutes * 60 * US))
        self.slice_us = max(1, self.window_us // SLICES)
        self.recent = LogRows.empty()  # the count window's rows
        self.slices: dict[int, _Slice] = {}
        self.seen = 0  # predictions added (a tracker restores it from its snapshot)
        self.newest_us: int | None = None
        self._rng = np.random.default_rng(seed)
        self._changes = 0
        self._cached: tuple[tuple[int, int], tuple[LogRows, int]] | None = None

    def add(self, new: LogRows, counted: int | None = None) -> None:
        """New rows from the log (any order); ``counted`` of them are new to ``seen`` (all
        unless told: a restart's rows that its snapshot counted already are not)."""
        self.seen += len(new) if counted is None else counted
        if not len(new):
            return
        merged = self.recent.concat(new)
        self.recent = merged.take(slice(max(0, len(merged) - self.window_rows), None))  # type: ignore[arg-type]
        newest = int(new.times.max())
        self.newest_us = newest if self.newest_us is None else max(self.newest_us, newest)
        # Rows older than the time window as of the newest row never enter a slice.
        keep = new.times >= self.newest_us - self.window_us
        if not keep.all():
            new = new.take(keep)
        keys = new.times // self.slice_us
        for key in np.unique(keys).tolist():
            part = new if len(keys) and keys[0] == keys[-1] == key else new.take(keys == key)
            self._into(int(key), part)
        self._changes += 1

    def add_older(self, older: LogRows) -> None:
        """Rows from before every window but the count window's (a restart refilling the
        last ``window_rows`` of a quiet version): they go to the count window only."""
        merged = older.concat(self.recent)
        self.recent = merged.take(slice(max(0, len(merged) - self.window_rows), None))  # type: ignore[arg-type]

    def _into(self, key: int, rows: LogRows) -> None:
        part = self.slices.get(key)
        if part is None:
            part = self.slices[key] = _Slice(0, LogRows.empty(rows.names))
        cap = self.sample_rows
        free = max(0, cap - len(part.rows))
        if free:
            part.rows = part.rows.stacked(rows.take(slice(0, free)))  # type: ignore[arg-type]
        rest = len(rows) - free
        if rest > 0:  # algorithm R, one draw per row: row p replaces slot j < cap, j ~ U[0, p]
            position = part.count + free + np.arange(rest)
            slot = self._rng.integers(0, position + 1)
            hit = np.flatnonzero(slot < cap)
            if hit.size:
                slots, sources = slot[hit], free + hit
                # The last row drawn for a slot is the one left there.
                _, first_reversed = np.unique(slots[::-1], return_index=True)
                last = len(slots) - 1 - first_reversed
                part.rows = part.rows.replaced(slots[last], rows.take(sources[last]))
        part.count += len(rows)

    def trim(self, now_us: int) -> None:
        """Drop the slices that are before the time window."""
        first = self._first_slice(now_us)
        old = [key for key in self.slices if key < first]
        for key in old:
            del self.slices[key]
        if old:
            self._changes += 1

    def _first_slice(self, now_us: int) -> int:
        return -(-(now_us - self.window_us) // self.slice_us)  # rounded up

    def count_window(self) -> Window:
        """The last ``window_rows`` predictions; full once that many arrived."""
        rows = self.recent
        return Window("rows", rows, *_span(rows), full=len(rows) >= self.window_rows)

    def time_window(self, now_us: int) -> Window:
        """The predictions of the last ``window_minutes`` (every one, or a uniform sample of
        ``sample_rows``); full with ``min_rows`` rows."""
        first = self._first_slice(now_us)
        if self._cached is None or self._cached[0] != (first, self._changes):
            self._cached = ((first, self._changes), self._draw(first))
        rows, total = self._cached[1]
        full = total >= self.min_rows
        sampled = total if total > len(rows) else None
        return Window("time", rows, first * self.slice_us, now_us, full, sampled)

    def _draw(self, first: int) -> tuple[LogRows, int]:
        """The time window's rows from ``first`` on (a sample of them if too many), in time
        order, and their true count; drawn again only when the slices change."""
        parts = [part for k, part in sorted(self.slices.items()) if k >= first]
        total = sum(part.count for part in parts)
        if total > self.sample_rows:  # from each slice in proportion to its count
            share = np.asarray([part.count for part in parts], dtype=np.float64)
            share *= self.sample_rows / total
            taken = np.floor(share).astype(np.int64)
            extra = self.sample_rows - int(taken.sum())
            taken[np.argsort(taken - share, kind="stable")[:extra]] += 1  # largest remainders
            parts = [
                _Slice(n, part.rows.take(self._rng.choice(len(part.rows), n, replace=False)))
                for part, n in zip(parts, taken.tolist(), strict=True)
            ]
        rows = _stack([part.rows for part in parts])
        if len(rows) > 1:
            rows = rows.take(np.argsort(rows.times, kind="stable"))
        return rows, total


def _stack(parts: list[LogRows]) -> LogRows:
    if not parts:
        return LogRows.empty()
    names = parts[0].names
    return LogRows(
        np.concatenate([p.ids for p in parts]),
        np.concatenate([p.times for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.aligned(names) for p in parts]),
        names,
    )


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
    rather than ``unknown``. A row seen before counts once: the same row read twice (a
    rebuild overlapping the log cursor: same id, version and time), or a stream row whose id
    the same version logged within the feedback window (a broker redelivered the message
    and the scorer stamped a new time when it wrote the record again; the first record is
    the prediction). Any other repeat is a new prediction — an HTTP client reusing an id,
    an id logged by another version or after the window — and is counted; the newest
    prediction takes the id, so feedback quoting a reused id joins the latest one.
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

    def add(
        self, version: int, rows: LogRows, stream: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.bool_]:
        """Index rows (in time order); returns which of them are new predictions.
        ``stream`` marks the rows the stream scorer logged (None: none did), whose repeats
        within the feedback window are redeliveries."""
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
        redelivery = [False] * len(ids) if stream is None else np.asarray(stream, bool).tolist()
        for i, (pid, prediction, redelivered) in enumerate(
            zip(ids, predictions, redelivery, strict=True)
        ):
            known = live.get(pid)
            if known is not None:
                if self._same(known.version, known.time_us, prediction, redelivered):
                    continue
                del live[pid]  # a new prediction with a reused id: the newer one takes it
            else:
                left = gone.get(pid)
                if left is not None:
                    if self._same(*left, prediction, redelivered):
                        continue
                    del gone[pid]
            live[pid] = prediction
            new[i] = True
        return new

    def _same(self, version: int, time_us: int, prediction: Prediction, redelivered: bool) -> bool:
        """Whether ``prediction`` repeats the one logged at ``time_us`` by ``version``."""
        if version != prediction.version:
            return False
        if prediction.time_us == time_us:
            return True
        return redelivered and abs(prediction.time_us - time_us) <= self.window_us

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

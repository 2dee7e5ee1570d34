"""The hot-path side of the prediction log: buffer batches, write them from a thread.

``record`` (HTTP) never blocks: it appends references to the batch's arrays to a bounded
buffer and returns False — counting the rows in ``dropped`` — when the buffer is full; no
table is built and no id made on the event loop. A writer thread concatenates what is
buffered, array by array, into one Arrow table per model version every ``flush_ms`` (a
thousand one-row requests cost one table, not a thousand) and writes it; rows of a write
that fails are dropped and counted too: a server keeps answering.

``record_durably`` (stream) returns once its rows are written and raises
``PredictionLogError`` when they could not be (or the store's own error when trying again
cannot help, such as rows the database refuses): the scorer acks only then. Its rows are
written together with whatever else is buffered, as soon as ``durable_rows`` wait or the
oldest has waited ``durable_flush_ms`` — a group commit across the scorer's batches, so a
busy scorer writes a few files a second rather than one per batch. A scorer whose input ran
dry calls ``hurry``: what waits is written once a quarter of ``durable_flush_ms`` has
passed since the last write, rather than holding the last acks of a burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shipyard.errors import PredictionLogError, ShipyardError
from shipyard.inference.predictor import Outputs, ScoredRows
from shipyard.monitoring.log import PredictionLog, prediction_table

logger = logging.getLogger(__name__)

Counted = Callable[[str, int], None]

WRITER_NICE = 10
"""The writer thread's niceness (Linux): on a busy core, the event loop of the process
(answering requests, scoring batches) comes first, and the writer — a few per cent of a
core — takes its share around it rather than half the core for the length of a write."""
SMALL_BLOCK_ROWS = 8
"""Below this many rows a block on average, the writer stacks blocks in one C call."""


@dataclass
class _Pending:
    model: str
    version: int
    source: str
    ids: Sequence[str]
    names: Sequence[str]
    features: npt.NDArray[Any]
    outputs: Outputs
    latency_ms: float | npt.NDArray[Any]
    micros: int
    """When the batch was recorded, in microseconds since the epoch (UTC)."""
    done: asyncio.Future[None] | None = None


class PredictionRecorder:
    """Buffers prediction batches and writes them to a ``PredictionLog`` from a thread."""

    def __init__(
        self,
        log: PredictionLog,
        *,
        buffer_rows: int = 100_000,
        flush_ms: float = 1000.0,
        durable_rows: int = 16_384,
        durable_flush_ms: float = 100.0,
        on_written: Counted = lambda model, rows: None,
        on_dropped: Counted = lambda model, rows: None,
    ) -> None:
        self.log = log
        self.buffer_rows = buffer_rows
        self.flush_s = flush_ms / 1000
        self.durable_rows = durable_rows
        self.durable_flush_s = min(durable_flush_ms, flush_ms) / 1000
        self.on_written = on_written
        self.on_dropped = on_dropped
        self.dropped = 0
        self.written = 0
        self.writes = 0
        self._pending: list[_Pending] = []
        self._rows = 0
        self._durable_rows = 0
        self._durable_since: float | None = None
        self._hurried = False
        self._last_write = float("-inf")  # hurried before any write: at once
        self._closing = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # -- the hot path ------------------------------------------------------------------------

    def record(
        self,
        model: str,
        version: int,
        source: str,
        ids: Sequence[str],
        names: Sequence[str],
        features: npt.NDArray[Any],
        outputs: Outputs,
        latency_ms: float | npt.NDArray[Any],
    ) -> bool:
        """Buffer a batch for the log; False (and counted as dropped) when the buffer is full."""
        rows = len(ids)
        entry = _Pending(
            model, version, source, ids, names, features, outputs, latency_ms, _now_micros()
        )
        with self._wake:
            if self._closing or self._rows + rows > self.buffer_rows:
                self.dropped += rows
                full = True
            else:
                self._pending.append(entry)
                self._rows += rows
                full = False
        if full:
            self.on_dropped(model, rows)
        return not full

    def scored_logger(self, source: str) -> Callable[[ScoredRows], None]:
        """A ``ServiceHooks.answered`` or ``shadowed`` that logs scored rows under the
        version that scored them (never waits; counts drops)."""

        def log(scored: ScoredRows) -> None:
            self.record(
                scored.model,
                scored.version,
                source,
                scored.ids,
                scored.names,
                scored.features,
                scored.outputs,
                scored.latency_ms,
            )

        return log

    async def record_durably(
        self,
        model: str,
        version: int,
        source: str,
        ids: Sequence[str],
        names: Sequence[str],
        features: npt.NDArray[Any],
        outputs: Outputs,
        latency_ms: float | npt.NDArray[Any],
    ) -> None:
        """Log a batch and return once it is written; ``PredictionLogError`` if it is not."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = _Pending(
            model,
            version,
            source,
            ids,
            names,
            features,
            outputs,
            latency_ms,
            _now_micros(),
            done,
        )
        with self._wake:
            if self._closing:
                raise PredictionLogError("the prediction log is closed")
            self._pending.append(entry)
            self._rows += len(ids)
            self._durable_rows += len(ids)
            if self._durable_since is None or self._durable_rows >= self.durable_rows:
                self._wake.notify()  # the writer's deadline moves closer
            if self._durable_since is None:
                self._durable_since = time.monotonic()
        await done

    def hurry(self) -> None:
        """No more records are coming soon (the scorer's input is empty): write the
        durable ones waiting without waiting for company."""
        if self._durable_since is None:
            return  # read without the lock: a record arriving now sets its own deadline
        with self._wake:
            if self._durable_since is not None:
                self._hurried = True
                self._wake.notify()

    # -- the writer thread -------------------------------------------------------------------

    def _due(self, last_flush: float) -> float | None:
        """Seconds until the next flush is due (0: now), None when nothing waits."""
        if not self._pending:
            return None
        now = time.monotonic()
        if self._closing or self._durable_rows >= self.durable_rows:
            return 0.0
        due = last_flush + self.flush_s
        if self._durable_since is not None:
            due = min(due, self._durable_since + self.durable_flush_s)
            if self._hurried:
                due = min(due, self._last_write + self.durable_flush_s / 4)
        return max(0.0, due - now)

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread is a task
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        last_flush = time.monotonic()
        while True:
            with self._wake:
                while True:
                    wait = self._due(last_flush)
                    if wait == 0.0:
                        break
                    if wait is None and self._closing:
                        return
                    self._wake.wait(wait if wait is not None else self.flush_s)
                    if wait is None:
                        last_flush = time.monotonic()
                taken, self._pending = self._pending, []
                self._rows = self._durable_rows = 0
                self._durable_since = None
                self._hurried = False
            last_flush = time.monotonic()
            self._write(taken)

    def _write(self, entries: list[_Pending]) -> None:
        self._last_write = time.monotonic()
        groups: dict[tuple[str, int], list[_Pending]] = {}
        for entry in entries:
            groups.setdefault((entry.model, entry.version), []).append(entry)
        for (model, _), group in groups.items():
            rows = sum(len(e.ids) for e in group)
            try:
                table = _table(group)
                self.log.write(table)
            except Exception as error:  # any failure of the sink must not kill the writer
                # A store's own error passes as it is: one that retrying cannot help (rows
                # the database refuses) must not be retried for ever.
                failure = (
                    error
                    if isinstance(error, ShipyardError)
                    else PredictionLogError(f"cannot write the prediction log ({error})")
                )
                self._failed(model, group, rows, failure)
                continue
            self.written += rows
            self.writes += 1
            self.on_written(model, rows)
            for entry in group:
                if entry.done is not None:
                    _settle(entry.done, None)

    def _failed(self, model: str, group: list[_Pending], rows: int, error: ShipyardError) -> None:
        lost = sum(len(e.ids) for e in group if e.done is None)
        if lost:
            self.dropped += lost
            self.on_dropped(model, lost)
            logger.warning("dropped %d prediction-log records: %s", lost, error)
        for entry in group:
            if entry.done is not None:
                _settle(entry.done, error)

    def close(self) -> None:
        """Write what is buffered, then stop the writer thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()


def _now_micros() -> int:
    return time.time_ns() // 1000


def _table(group: list[_Pending]) -> pa.Table:
    """One table of a version's buffered batches: their arrays concatenated first, so the
    table is built once however many requests the group holds."""
    sources = set(map(attrgetter("source"), group))
    if len(sources) == 1:  # a server's or a scorer's: no Python loop over its entries
        return _joined(group)
    by_source: dict[str, list[_Pending]] = {}
    for entry in group:
        by_source.setdefault(entry.source, []).append(entry)
    tables = [_joined(entries) for entries in by_source.values()]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _joined(entries: list[_Pending]) -> pa.Table:
    first = entries[0]
    if len(entries) == 1:
        times = np.full(len(first.ids), first.micros, dtype="datetime64[us]")
        return prediction_table(
            first.model, first.version, first.source, first.ids, first.names,
            first.features, first.outputs, first.latency_ms, times,
        )  # fmt: skip
    # Thousands of one-row entries a second (HTTP): each column is gathered by C-level
    # ``map``s rather than a Python loop, which would hold the GIL for milliseconds, a stall
    # of every request the server answers meanwhile.
    count = len(entries)
    id_lists = list(map(attrgetter("ids"), entries))
    counts = np.fromiter(map(len, id_lists), np.int64, count)
    ids = list(itertools.chain.from_iterable(id_lists))
    features = _transposed(list(map(attrgetter("features"), entries)), len(ids))
    output_dicts = list(map(attrgetter("outputs"), entries))
    outputs = {
        key: np.concatenate(list(map(itemgetter(key), output_dicts))) for key in first.outputs
    }
    latencies = list(map(attrgetter("latency_ms"), entries))
    if set(map(type, latencies)) <= {float, int}:  # one latency per request
        latency: npt.NDArray[Any] = np.repeat(np.array(latencies, np.float32), counts)
    else:
        latency = np.concatenate(
            [
                np.broadcast_to(np.asarray(value, np.float32), (rows,))
                for value, rows in zip(latencies, counts.tolist(), strict=True)
            ]
        )
    micros = np.fromiter(map(attrgetter("micros"), entries), np.int64, count)
    times = np.repeat(micros, counts).astype("datetime64[us]")
    return prediction_table(
        first.model, first.version, first.source, ids, first.names, features, outputs,
        latency, times,
    )  # fmt: skip


def _transposed(blocks: list[npt.NDArray[Any]], rows: int) -> npt.NDArray[Any]:
    """The row blocks stacked, as the transpose of a C-ordered float32 (feature, row)
    matrix: one strided copy, which ``prediction_table`` then takes column by column.

    Blocks of a few rows (one-row HTTP requests: thousands a second) are stacked in one
    ``np.concatenate`` instead: a copy per block from Python would hold the GIL for
    milliseconds, a stall of every request the server is answering meanwhile."""
    if len(blocks) * SMALL_BLOCK_ROWS > rows:
        return np.ascontiguousarray(np.concatenate(blocks, dtype=np.float32).T).T
    columns = np.empty((blocks[0].shape[1], rows), np.float32)
    start = 0
    for block in blocks:
        columns[:, start : start + len(block)] = block.T
        start += len(block)
    return columns.T


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Resolve a waiter's future from the writer thread, on its own loop."""

    def settle() -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle)

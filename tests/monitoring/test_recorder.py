"""The recorder: bounded, never blocking for HTTP; durable, group-committed for the stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shipyard.errors import InvalidInputError, PredictionLogError
from shipyard.monitoring.log import ParquetLog
from shipyard.monitoring.recorder import PredictionRecorder

NAMES = ["a", "b"]

pytestmark = pytest.mark.anyio


class FlakyLog:
    """A store that fails while ``broken`` and keeps what it was given otherwise."""

    def __init__(self) -> None:
        self.broken = False
        self.tables: list[pa.Table] = []

    def write(self, batch: pa.Table) -> None:
        if self.broken:
            raise PredictionLogError("the sink is down")
        self.tables.append(batch)

    def ids(self) -> list[str]:
        return [i for t in self.tables for i in t.column("id").to_pylist()]


def rows(ids: list[str]) -> tuple[list[str], list[str], np.ndarray, dict[str, np.ndarray], float]:
    n = len(ids)
    outputs = {"probability": np.full(n, 0.25, np.float32), "label": np.zeros(n, np.int64)}
    return ids, NAMES, np.ones((n, 2), np.float32), outputs, 2.0


def test_records_are_written_in_one_table_per_version_on_close(tmp_path: Path) -> None:
    log = ParquetLog(tmp_path)
    recorder = PredictionRecorder(log, flush_ms=60_000)
    assert recorder.record("m", 1, "http", *rows(["1", "2"]))
    assert recorder.record("m", 1, "http", *rows(["3"]))
    assert recorder.record("m", 2, "http", *rows(["4"]))
    recorder.close()
    found = log.scan("m")
    assert {v: t.column("id").to_pylist() for v, t in found.items()} == {
        1: ["1", "2", "3"],
        2: ["4"],
    }
    assert recorder.written == 4
    assert recorder.writes == 2
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 2


def test_a_full_buffer_drops_and_counts() -> None:
    store = FlakyLog()
    dropped: list[int] = []
    recorder = PredictionRecorder(
        store,  # type: ignore[arg-type]
        buffer_rows=3,
        flush_ms=60_000,
        on_dropped=lambda model, n: dropped.append(n),
    )
    assert recorder.record("m", 1, "http", *rows(["1", "2"]))
    assert not recorder.record("m", 1, "http", *rows(["3", "4"]))
    recorder.close()
    assert recorder.dropped == 2
    assert dropped == [2]
    assert store.ids() == ["1", "2"]


def test_an_unavailable_sink_drops_http_records_and_keeps_going() -> None:
    store = FlakyLog()
    store.broken = True
    recorder = PredictionRecorder(store, flush_ms=60_000)  # type: ignore[arg-type]
    assert recorder.record("m", 1, "http", *rows(["1"]))
    recorder.close()
    assert recorder.dropped == 1
    assert store.ids() == []


def test_an_unwritable_folder_drops_http_records(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    recorder = PredictionRecorder(ParquetLog(blocked), flush_ms=60_000)
    recorder.record("m", 1, "http", *rows(["1", "2"]))
    recorder.close()
    assert recorder.dropped == 2


async def test_durable_records_return_once_written_grouped_together() -> None:
    store = FlakyLog()
    recorder = PredictionRecorder(
        store,  # type: ignore[arg-type]
        flush_ms=60_000,
        durable_flush_ms=50,
    )
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(recorder.record_durably("m", 1, "stream", *rows([str(i)])) for i in range(5))
            ),
            10,
        )
        assert sorted(store.ids()) == ["0", "1", "2", "3", "4"]
        assert len(store.tables) == 1  # one group commit
    finally:
        recorder.close()


async def test_durable_records_fail_while_the_sink_is_down_and_land_after() -> None:
    store = FlakyLog()
    store.broken = True
    recorder = PredictionRecorder(store, durable_flush_ms=10)  # type: ignore[arg-type]
    try:
        with pytest.raises(PredictionLogError):
            await asyncio.wait_for(recorder.record_durably("m", 1, "stream", *rows(["1"])), 10)
        assert recorder.dropped == 0  # not dropped: the caller retries
        store.broken = False
        await asyncio.wait_for(recorder.record_durably("m", 1, "stream", *rows(["1"])), 10)
        assert store.ids() == ["1"]
    finally:
        recorder.close()


async def test_a_full_durable_batch_is_written_at_once() -> None:
    store = FlakyLog()
    recorder = PredictionRecorder(
        store,  # type: ignore[arg-type]
        flush_ms=60_000,
        durable_rows=2,
        durable_flush_ms=60_000,
    )
    try:
        await asyncio.wait_for(recorder.record_durably("m", 1, "stream", *rows(["1", "2"])), 10)
        assert store.ids() == ["1", "2"]
    finally:
        recorder.close()


async def test_closed_recorders_refuse_durable_records() -> None:
    recorder = PredictionRecorder(FlakyLog())  # type: ignore[arg-type]
    recorder.close()
    with pytest.raises(PredictionLogError, match="closed"):
        await recorder.record_durably("m", 1, "stream", *rows(["1"]))
    assert not recorder.record("m", 1, "http", *rows(["1"]))


def test_many_small_records_make_one_table_with_each_rows_own_values() -> None:
    store = FlakyLog()
    recorder = PredictionRecorder(store, flush_ms=60_000)  # type: ignore[arg-type]
    for i in range(50):
        ids, names, features, outputs, _ = rows([str(i)])
        recorder.record("m", 1, "http", ids, names, features * i, outputs, float(i))
    ids, names, features, outputs, _ = rows(["x", "y"])
    recorder.record("m", 1, "http", ids, names, features, outputs, np.array([7.0, 8.0]))
    recorder.close()
    [table] = store.tables
    assert table.column("id").to_pylist() == [*map(str, range(50)), "x", "y"]
    assert table.column("latency_ms").to_pylist() == [*map(float, range(50)), 7.0, 8.0]
    assert [f["a"] for f in table.column("features").to_pylist()[:3]] == [0.0, 1.0, 2.0]
    times = table.column("time").to_pylist()
    assert times == sorted(times)


async def test_hurry_writes_waiting_durable_records_without_their_deadline() -> None:
    store = FlakyLog()
    recorder = PredictionRecorder(
        store,  # type: ignore[arg-type]
        flush_ms=60_000,
        durable_flush_ms=600_000,  # hurried, and nothing written before: at once
    )
    try:
        recorder.hurry()  # nothing waits: nothing to do
        waiting = asyncio.ensure_future(recorder.record_durably("m", 1, "stream", *rows(["1"])))
        for _ in range(100):  # bounded: until the record is buffered
            if recorder._durable_since is not None:
                break
            await asyncio.sleep(0.01)
        recorder.hurry()
        await asyncio.wait_for(waiting, 30)  # not the ten-minute deadline
        assert store.ids() == ["1"]
    finally:
        recorder.close()


async def test_an_error_retrying_cannot_help_reaches_the_caller_as_it_is() -> None:
    """Rows the store refuses (an InvalidInputError) are not turned into a retryable
    PredictionLogError, or a stream scorer would retry them for ever."""

    class RefusingLog(FlakyLog):
        def write(self, batch: pa.Table) -> None:
            raise InvalidInputError("the database refused the rows")

    recorder = PredictionRecorder(RefusingLog(), durable_flush_ms=10)  # type: ignore[arg-type]
    try:
        with pytest.raises(InvalidInputError, match="refused") as caught:
            await asyncio.wait_for(recorder.record_durably("m", 1, "stream", *rows(["1"])), 10)
        assert not caught.value.retryable
    finally:
        recorder.close()

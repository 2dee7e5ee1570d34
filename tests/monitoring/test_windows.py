"""Windows over a version's log rows, and the id index feedback is joined through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from shipyard.monitoring.log import prediction_table
from shipyard.monitoring.windows import US, JoinIndex, LogRows, VersionRows

NAMES = ["a", "b"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def rows(ids: list[str], start: datetime = T0, step_s: float = 1.0) -> LogRows:
    """Log rows of fraud v1, one per id, ``step_s`` apart from ``start``."""
    n = len(ids)
    features = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    times = np.array(
        [np.datetime64(int((start.timestamp() + i * step_s) * US), "us") for i in range(n)]
    )
    outputs = {"probability": np.linspace(0, 1, n), "label": (np.arange(n) % 2).astype(np.int64)}
    table = prediction_table("fraud", 1, "http", ids, NAMES, features, outputs, 1.0, times)
    return LogRows.from_table(table)


def us(moment: datetime) -> int:
    return int(moment.timestamp() * US)


def test_log_rows_come_back_as_columns() -> None:
    got = rows(["x", "y", "z"])
    assert got.ids.tolist() == ["x", "y", "z"]
    assert got.names == ("a", "b")
    assert got.features.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert got.labels.tolist() == ["0", "1", "0"]
    assert got.scores.tolist() == [0.0, 0.5, 1.0]
    assert got.times[1] - got.times[0] == US


def test_count_window_is_full_at_n_rows_and_keeps_the_latest() -> None:
    window = VersionRows(window_rows=3, window_minutes=1, min_rows=2)
    window.add(rows(["a", "b"]))
    assert not window.count_window().full
    window.add(rows(["c", "d"], T0 + timedelta(seconds=2)))
    window.trim(us(T0 + timedelta(hours=1)))
    count = window.count_window()
    assert count.full
    assert count.rows.ids.tolist() == ["b", "c", "d"]
    assert window.seen == 4


def test_time_window_holds_the_last_minutes_and_needs_min_rows() -> None:
    window = VersionRows(window_rows=2, window_minutes=1, min_rows=3)
    window.add(rows([f"r{i}" for i in range(10)], step_s=20))  # 0 .. 180 s
    now = us(T0 + timedelta(seconds=185))
    window.trim(now)
    timed = window.time_window(now)
    assert timed.rows.ids.tolist() == ["r7", "r8", "r9"]  # 140, 160, 180 s
    assert timed.full
    assert not timed.sampled
    assert timed.bounds()["rows"] == 3
    kept = sum(len(part.rows) for part in window.slices.values())
    assert kept == 3  # nothing older than the time window is kept in its slices
    assert not window.time_window(us(T0 + timedelta(seconds=215))).full


def test_a_busy_time_window_is_a_uniform_sample_with_its_true_count() -> None:
    window = VersionRows(window_rows=10, window_minutes=10, min_rows=5, sample_rows=400)
    ids = [f"r{i}" for i in range(12_000)]
    for start in range(0, 12_000, 1_000):  # 12,000 rows over 10 minutes, in 12 batches
        batch = ids[start : start + 1_000]
        window.add(rows(batch, T0 + timedelta(seconds=start * 0.05), step_s=0.05))
    now = us(T0 + timedelta(seconds=600))
    window.trim(now)
    timed = window.time_window(now)
    bounds = timed.bounds()
    assert timed.sampled
    assert bounds["sampled"]
    assert len(timed.rows) == bounds["sample_rows"] == 400
    # The window starts at a slice boundary (10 min / 16): its true count is exact.
    start = (now - 600 * US + window.slice_us - 1) // window.slice_us * window.slice_us
    assert timed.start_us == start
    assert bounds["rows"] == sum(1 for i in range(12_000) if us(T0) + i * 50_000 >= start)
    assert len(set(timed.rows.ids.tolist())) == 400
    assert (np.diff(timed.rows.times) >= 0).all()
    # Uniform over time: each half of the window gives about half the sample.
    middle = start + (now - start) // 2
    assert 150 < int((timed.rows.times < middle).sum()) < 250
    # Memory: each slice keeps at most sample_rows rows, whatever came in.
    assert all(len(p.rows) <= 400 for p in window.slices.values())
    assert window.time_window(now).rows is timed.rows  # drawn again only on change
    assert window.count_window().rows.ids.tolist() == ids[-10:]
    assert window.seen == 12_000


def test_the_reservoir_is_uniform_over_many_rows_of_one_slice() -> None:
    picked = np.zeros(1_000)
    for seed in range(60):
        window = VersionRows(
            window_rows=1, window_minutes=600, min_rows=1, sample_rows=50, seed=seed
        )
        for start in range(0, 1_000, 100):
            window.add(rows([str(i) for i in range(start, start + 100)], T0, step_s=0.0))
        (part,) = window.slices.values()
        assert part.count == 1_000
        picked[np.asarray(part.rows.ids.tolist(), dtype=int)] += 1
    # Each row is kept with probability 50 / 1000: early and late rows alike.
    assert abs(picked[:500].sum() - picked[500:].sum()) < 0.2 * picked.sum()
    assert picked.sum() == 60 * 50


def test_rows_arriving_out_of_order_are_sorted_by_time() -> None:
    window = VersionRows(window_rows=10, window_minutes=60, min_rows=1)
    window.add(rows(["late"], T0 + timedelta(seconds=5)))
    window.add(rows(["early"], T0))
    assert window.count_window().rows.ids.tolist() == ["early", "late"]


def test_index_evicts_by_age_and_count_and_remembers_what_left() -> None:
    index = JoinIndex(max_rows=3, window_us=60 * US)
    assert index.add(1, rows(["a", "b", "c", "d"], step_s=10)).all()
    assert index.evict(us(T0 + timedelta(seconds=30))) == 1  # over the cap: "a"
    assert "a" not in index
    assert index.left("a")
    assert index.evict(us(T0 + timedelta(seconds=75))) == 1  # older than 60 s: "b" (t=10)
    assert index.left("b")
    prediction = index.get("d")
    assert prediction is not None
    assert (prediction.version, prediction.label) == (1, "1")
    assert not index.left("never")


def test_index_counts_a_row_read_twice_once_but_takes_a_reused_id() -> None:
    index = JoinIndex(max_rows=10, window_us=3600 * US)
    first = rows(["a", "b"])
    assert index.add(1, first).tolist() == [True, True]
    assert index.add(1, first).tolist() == [False, False]  # a rebuild overlapping the cursor
    reused = rows(["a"], T0 + timedelta(seconds=30))
    assert index.add(2, reused).tolist() == [True]
    prediction = index.get("a")
    assert prediction is not None
    assert prediction.version == 2


def test_a_redelivered_prediction_with_a_new_time_counts_once() -> None:
    # A broker redelivers m1 after a kill; the scorer stamps the record with the write time.
    index = JoinIndex(max_rows=10, window_us=3600 * US)
    window = VersionRows(window_rows=10, window_minutes=60, min_rows=1)
    for batch in (rows(["m1", "m2"]), rows(["m1"], T0 + timedelta(seconds=5))):
        window.add(batch.take(index.add(1, batch, np.ones(len(batch), dtype=bool))))
    assert window.count_window().rows.ids.tolist() == ["m1", "m2"]
    assert window.seen == 2
    assert len(index) == 2
    prediction = index.get("m1")
    assert prediction is not None
    assert prediction.time_us == us(T0)  # the first record is the prediction
    # Within one batch too.
    assert index.add(1, rows(["m3", "m3"], step_s=2), np.ones(2, bool)).tolist() == [True, False]


def test_an_http_client_reusing_an_id_makes_a_new_prediction_that_takes_the_id() -> None:
    index = JoinIndex(max_rows=10, window_us=3600 * US)
    window = VersionRows(window_rows=10, window_minutes=60, min_rows=1)
    for batch in (rows(["a", "b"]), rows(["a"], T0 + timedelta(seconds=5))):
        window.add(batch.take(index.add(1, batch)))  # HTTP rows: no stream mask
    assert window.count_window().rows.ids.tolist() == ["a", "b", "a"]
    assert window.seen == 3
    prediction = index.get("a")
    assert prediction is not None
    assert prediction.time_us == us(T0 + timedelta(seconds=5))  # feedback joins the newest
    # Within one batch too; but the very same row (id, version and time) is read once.
    assert index.add(1, rows(["c", "c"], step_s=2)).tolist() == [True, True]
    assert index.add(1, rows(["a"], T0 + timedelta(seconds=5))).tolist() == [False]


def test_an_id_that_left_the_index_is_still_known_within_the_window() -> None:
    index = JoinIndex(max_rows=1, window_us=3600 * US, gone_rows=5)
    index.add(1, rows(["a", "b"]))
    index.evict(us(T0))  # over the cap: "a" leaves
    assert index.left("a")
    assert index.add(1, rows(["a"], T0 + timedelta(seconds=9)), np.ones(1, bool)).tolist() == [
        False
    ]
    # After the window, the same id is a client's new prediction.
    assert index.add(1, rows(["a"], T0 + timedelta(hours=2))).tolist() == [True]
    assert not index.left("a")
    index.add(1, rows([f"x{i}" for i in range(7)], T0 + timedelta(hours=3)))
    index.evict(us(T0 + timedelta(hours=3)))
    assert not index.left("b")  # only the last five that left are remembered

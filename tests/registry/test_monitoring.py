import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest

from shipyard.errors import InvalidInputError, LeaseLostError, ModelNotFoundError
from shipyard.registry import FeedbackReceipt, HistoryPoint, MonitoringStore, Registry
from shipyard.registry import monitoring as monitoring_module

from .conftest import register

T = TypeVar("T")


@pytest.fixture
def store(registry: Registry) -> MonitoringStore:
    register(registry, "fraud")
    register(registry, "other")
    return registry.monitoring


def race(work: Callable[[int], T], threads: int = 6) -> list[T]:
    """Run ``work(i)`` in ``threads`` threads at once; their results in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, range(threads)))


def test_a_registry_hands_out_its_monitoring_store(registry: Registry) -> None:
    assert isinstance(registry.monitoring, MonitoringStore)


# -- feedback ------------------------------------------------------------------------------


def test_feedback_is_stored_once_per_id_and_read_in_order(store: MonitoringStore) -> None:
    first = store.add_feedback("fraud", [("a", "1"), ("b", "0"), ("a", "0")], source="http")
    assert (first.received, first.accepted, first.duplicates) == (3, 2, ["a"])
    second = store.add_feedback("fraud", [("b", "1"), ("c", "1")], source="file")
    assert (second.received, second.accepted, second.duplicates) == (2, 1, ["b"])
    assert store.add_feedback("other", [("a", "7.5")], source="queue").accepted == 1

    records = store.feedback_after("fraud", 0)
    assert [(r.id, r.label, r.source, r.status, r.model) for r in records] == [
        ("a", "1", "http", "pending", "fraud"),
        ("b", "0", "http", "pending", "fraud"),
        ("c", "1", "file", "pending", "fraud"),
    ]
    seqs = [r.seq for r in records]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    assert all(r.received_at.tzinfo is not None for r in records)
    assert records[0].received_at.utcoffset() == timedelta(0)
    assert [r.id for r in store.feedback_after("fraud", seqs[0])] == ["b", "c"]
    assert [r.id for r in store.feedback_after("fraud", 0, limit=1)] == ["a"]
    assert store.feedback_after("fraud", seqs[-1]) == []
    assert store.feedback_counts("fraud") == {
        "accepted": 3,
        "duplicate": 2,
        "pending": 3,
        "joined": 0,
        "unknown": 0,
        "late": 0,
    }
    assert store.feedback_counts("other")["accepted"] == 1
    assert store.add_feedback("fraud", [], source="http").received == 0


def test_settled_feedback_is_counted_and_filtered_by_status(store: MonitoringStore) -> None:
    store.add_feedback("fraud", [(f"p{i}", "1") for i in range(5)], source="http")
    store.settle_feedback("fraud", {"p0": "joined", "p1": "joined", "p2": "unknown", "zz": "late"})
    store.settle_feedback("fraud", {"p3": "late"})
    counts = store.feedback_counts("fraud")
    assert (counts["joined"], counts["unknown"], counts["late"], counts["pending"]) == (2, 1, 1, 1)
    assert counts["accepted"] == 5
    assert [r.id for r in store.feedback_after("fraud", 0, status="pending")] == ["p4"]
    assert [r.id for r in store.feedback_after("fraud", 0, status="joined")] == ["p0", "p1"]
    store.settle_feedback("fraud", {"p2": "joined"})  # an unknown id may join later
    assert store.feedback_counts("fraud")["joined"] == 3


def test_feedback_after_a_time_reads_only_what_was_received_since(
    store: MonitoringStore,
) -> None:
    store.add_feedback("fraud", [("old", "1")], source="http")
    middle = datetime.now(UTC)
    store.add_feedback("fraud", [("new", "0")], source="http")
    assert [r.id for r in store.feedback_after("fraud", 0, since=middle)] == ["new"]
    later = middle + timedelta(hours=1)
    assert store.feedback_after("fraud", 0, status="pending", since=later) == []
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        store.feedback_after("fraud", 0, since=datetime(2025, 1, 1))


def test_a_large_batch_finds_duplicates_across_chunks(store: MonitoringStore) -> None:
    ids = [f"id-{i}" for i in range(1_800)]
    store.add_feedback("fraud", [(i, "0") for i in ids[:900]], source="file")
    receipt = store.add_feedback("fraud", [(i, "1") for i in ids], source="file")
    assert receipt.accepted == 900
    assert receipt.duplicates == ids[:900]
    assert len(store.feedback_after("fraud", 0, limit=5_000)) == 1_800


def test_concurrent_batches_store_each_id_once(store: MonitoringStore) -> None:
    ids = [f"x{i}" for i in range(3000)]

    def send(n: int) -> FeedbackReceipt:
        # Batches share ids in different orders: none may deadlock (3,000 ids deadlocked
        # PostgreSQL when rows went in batch order) or store an id twice.
        ordered = ids[n:] + ids[:n] if n % 2 else ids[::-1]
        return store.add_feedback("fraud", [(i, str(n % 2)) for i in ordered], source="http")

    receipts = race(send)
    assert sum(r.accepted for r in receipts) == 3000
    assert sum(len(r.duplicates) for r in receipts) == 3000 * (len(receipts) - 1)
    counts = store.feedback_counts("fraud")
    assert (counts["accepted"], counts["duplicate"]) == (3000, 3000 * (len(receipts) - 1))


@pytest.mark.parametrize(
    ("items", "source", "match"),
    [
        ([("a", 1)], "http", "label of feedback item 1 \\(id 'a'\\) must be text"),
        ([("", "1")], "http", "prediction id of feedback item 1"),
        ([("a", "1"), (None, "1")], "http", "prediction id of feedback item 2"),
        ([("x" * 201, "1")], "http", "at most 200"),
        (["a"], "http", "item 1 must be a \\(prediction id, label\\) pair"),
        ([("a", "1")], "email", "source 'email'"),
    ],
)
def test_bad_feedback_refuses_the_whole_batch(
    store: MonitoringStore, items: list[Any], source: str, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        store.add_feedback("fraud", [("ok", "1"), *items], source=source)
    assert store.feedback_after("fraud", 0) == []


def test_monitoring_of_an_unknown_model_is_refused(store: MonitoringStore) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.add_feedback("nope", [("a", "1")], source="http"),
        lambda: store.feedback_after("nope", 0),
        lambda: store.feedback_counts("nope"),
        lambda: store.settle_feedback("nope", {"a": "joined"}),
        lambda: store.acquire_lease("nope", "me", 10),
        lambda: store.record_event("nope", 1, "drift.detected", "k", {}),
        lambda: store.events("nope"),
        lambda: store.save_snapshot("nope", 1, {}),
        lambda: store.snapshots("nope"),
        lambda: store.save_cursor("nope", "log", {}),
        lambda: store.cursor("nope", "log"),
        lambda: store.lease("nope"),
    ]
    for call in calls:
        with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
            call()


def test_bad_arguments_are_refused(store: MonitoringStore) -> None:
    with pytest.raises(InvalidInputError, match="status 'done'"):
        store.settle_feedback("fraud", {"a": "done"})  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="status 'done'"):
        store.feedback_after("fraud", 0, status="done")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="limit"):
        store.feedback_after("fraud", 0, limit=0)
    with pytest.raises(InvalidInputError, match="limit"):
        store.events("fraud", limit=-1)
    with pytest.raises(InvalidInputError, match="more than 0 seconds"):
        store.acquire_lease("fraud", "me", 0)
    with pytest.raises(InvalidInputError, match="number of seconds"):
        store.acquire_lease("fraud", "me", float("nan"))
    with pytest.raises(InvalidInputError, match="lease owner"):
        store.acquire_lease("fraud", "", 10)
    with pytest.raises(InvalidInputError, match="JSON"):
        store.record_event("fraud", 1, "drift.detected", "k", {"p": float("nan")})
    with pytest.raises(InvalidInputError, match="event key"):
        store.record_event("fraud", 1, "drift.detected", "", {})
    with pytest.raises(InvalidInputError, match="version"):
        store.record_event("fraud", "1", "drift.detected", "k", {})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="JSON"):
        store.save_snapshot("fraud", 1, {"when": datetime.now(UTC)})
    with pytest.raises(InvalidInputError, match="JSON"):
        store.save_cursor("fraud", "log", {"x": float("inf")})
    assert store.events("fraud") == []
    assert store.snapshots("fraud") == {}
    assert store.cursor("fraud", "log") is None


# -- leases --------------------------------------------------------------------------------


def test_a_lease_is_held_by_one_owner_until_released_or_expired(
    store: MonitoringStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.lease("fraud") is None
    assert store.acquire_lease("fraud", "monitor-a", 30)
    owner, expires = store.lease("fraud") or ("", datetime.min)
    assert owner == "monitor-a"
    assert expires.tzinfo is not None
    assert not store.acquire_lease("fraud", "monitor-b", 30)
    assert store.acquire_lease("fraud", "monitor-a", 60)  # renews
    renewed = store.lease("fraud")
    assert renewed is not None
    assert renewed[1] > expires
    assert store.acquire_lease("other", "monitor-b", 30)  # one lease per model

    store.release_lease("fraud", "monitor-b")  # not its lease: nothing happens
    assert not store.acquire_lease("fraud", "monitor-b", 30)
    store.release_lease("fraud", "monitor-a")
    assert store.lease("fraud") is None
    assert store.acquire_lease("fraud", "monitor-b", 30)

    later = renewed[1] + timedelta(seconds=1)  # monitor-b's lease has expired by then
    monkeypatch.setattr(monitoring_module, "utcnow", lambda: later)
    assert store.acquire_lease("fraud", "monitor-a", 30)
    assert store.lease("fraud") == ("monitor-a", later + timedelta(seconds=30))


def acquire(store: MonitoringStore, model: str, n: int) -> bool:
    return store.acquire_lease(model, f"monitor-{n}", 30)


def test_one_of_many_racing_monitors_gets_a_lease(store: MonitoringStore) -> None:
    for round_ in range(3):
        model = "fraud" if round_ == 0 else "other"
        if round_ == 2:
            store.release_lease("other", store.lease("other")[0])  # type: ignore[index]
        won = race(partial(acquire, store, model))
        assert won.count(True) == 1, won
        holder = store.lease(model)
        assert holder is not None
        assert holder[0] == f"monitor-{won.index(True)}"


# -- events --------------------------------------------------------------------------------


def test_an_event_is_recorded_once_per_key(store: MonitoringStore) -> None:
    first = store.record_event("fraud", 2, "drift.detected", "drift:2:w10", {"features": ["V1"]})
    assert first is not None
    assert (first.model, first.version, first.kind, first.key) == (
        "fraud",
        2,
        "drift.detected",
        "drift:2:w10",
    )
    assert first.evidence == {"features": ["V1"]}
    assert first.at.tzinfo is not None
    assert store.record_event("fraud", 2, "drift.detected", "drift:2:w10", {"other": 1}) is None
    assert store.record_event("other", 1, "drift.detected", "drift:2:w10", {}) is not None
    second = store.record_event("fraud", None, "performance.degraded", "perf:1", {"ap": 0.2})
    assert second is not None
    assert second.id > first.id

    assert store.events("fraud") == [first, second]
    assert store.events("fraud", kind="performance.degraded") == [second]
    assert store.events("fraud", after_id=first.id) == [second]
    assert store.events("fraud", limit=1) == [first]


def test_racing_monitors_record_an_event_once(store: MonitoringStore) -> None:
    recorded = race(lambda n: store.record_event("fraud", 1, "drift.detected", "same", {"n": n}))
    assert sum(event is not None for event in recorded) == 1
    assert len(store.events("fraud")) == 1


# -- snapshots and cursors -----------------------------------------------------------------


def test_snapshots_and_cursors_are_replaced(store: MonitoringStore) -> None:
    store.save_snapshot("fraud", 1, {"rows": 10})
    store.save_snapshot("fraud", 2, {"rows": 5, "drift": {"V1": 0.3}})
    store.save_snapshot("fraud", 1, {"rows": 20})
    assert store.snapshots("fraud") == {1: {"rows": 20}, 2: {"rows": 5, "drift": {"V1": 0.3}}}
    assert store.snapshots("other") == {}

    assert store.cursor("fraud", "log") is None
    store.save_cursor("fraud", "log", {"file": "a.parquet", "row": 3})
    store.save_cursor("fraud", "feedback", {"seq": 9})
    store.save_cursor("fraud", "log", {"file": "b.parquet", "row": 0})
    assert store.cursor("fraud", "log") == {"file": "b.parquet", "row": 0}
    assert store.cursor("fraud", "feedback") == {"seq": 9}
    assert store.cursor("other", "log") is None


def test_racing_snapshot_writers_leave_one_row(store: MonitoringStore) -> None:
    race(lambda n: store.save_snapshot("fraud", 1, {"writer": n}))
    race(lambda n: store.save_cursor("fraud", "log", {"writer": n}))
    assert list(store.snapshots("fraud")) == [1]
    assert store.cursor("fraud", "log") is not None


# -- lease-guarded writes, counters, retention ---------------------------------------------


def test_a_store_held_by_an_owner_writes_only_while_it_holds_the_lease(
    store: MonitoringStore,
) -> None:

    mine = store.held_by("first")
    store.add_feedback("fraud", [("a", "1")], source="http")
    writes: list[Callable[[], object]] = [
        lambda: mine.save_cursor("fraud", "log", {"at": 1}),
        lambda: mine.save_snapshot("fraud", 1, {"rows": 1}),
        lambda: mine.settle_feedback("fraud", {"a": "joined"}),
        lambda: mine.record_event("fraud", 1, "drift.detected", "k", {}),
        lambda: mine.expire_feedback("fraud", datetime.now(UTC)),
        lambda: mine.commit_cycle("fraud", statuses={}, cursors={"log": {"at": 1}}, snapshots={}),
    ]
    for write in writes:  # nobody holds the lease
        with pytest.raises(LeaseLostError, match="first no longer holds the lease on 'fraud'"):
            write()
    assert store.acquire_lease("fraud", "first", 30)
    for write in writes:
        write()
    assert store.cursor("fraud", "log") == {"at": 1}
    # "second" takes over after the lease expired: the stale monitor's writes are refused.
    assert store.acquire_lease("fraud", "first", 0.01)
    for _ in range(100):
        if store.acquire_lease("fraud", "second", 30):
            break
        time.sleep(0.01)
    with pytest.raises(LeaseLostError):
        mine.save_cursor("fraud", "log", {"at": 0})
    assert store.cursor("fraud", "log") == {"at": 1}  # not moved back
    store.held_by("second").save_cursor("fraud", "log", {"at": 2})
    assert store.cursor("fraud", "log") == {"at": 2}
    # Another model's lease does not count.
    with pytest.raises(LeaseLostError):
        store.held_by("second").save_cursor("other", "log", {"at": 2})


def test_a_cycle_is_committed_whole_or_not_at_all(
    store: MonitoringStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_feedback("fraud", [("a", "1"), ("b", "0"), ("c", "1")], source="http")
    mine = store.held_by("first")
    assert store.acquire_lease("fraud", "first", 30)
    mine.commit_cycle(
        "fraud",
        statuses={"a": "joined", "b": "unknown"},
        cursors={"log": {"at": 1}, "totals:v1": {"seen": 2}},
        snapshots={1: {"rows": 2}},
    )
    assert store.cursor("fraud", "log") == {"at": 1}
    assert store.cursor("fraud", "totals:v1") == {"seen": 2}
    assert store.snapshots("fraud") == {1: {"rows": 2}}
    counts = store.feedback_counts("fraud")
    assert (counts["pending"], counts["joined"], counts["unknown"]) == (1, 1, 1)

    def killed(*args: Any) -> None:  # the process dies after the statuses and cursors
        raise RuntimeError("killed")

    monkeypatch.setattr(monitoring_module, "_put_snapshot", killed)
    with pytest.raises(RuntimeError):
        mine.commit_cycle(
            "fraud",
            statuses={"c": "joined", "b": "joined"},
            cursors={"log": {"at": 2}, "totals:v1": {"seen": 3}},
            snapshots={1: {"rows": 3}},
        )
    assert store.cursor("fraud", "log") == {"at": 1}  # nothing of it
    assert store.cursor("fraud", "totals:v1") == {"seen": 2}
    assert store.snapshots("fraud") == {1: {"rows": 2}}
    assert store.feedback_counts("fraud") == counts
    assert [r.status for r in store.feedback_after("fraud", 0)] == ["joined", "unknown", "pending"]


def test_a_cycle_with_bad_parts_is_refused(store: MonitoringStore) -> None:
    mine = store.held_by("first")
    assert store.acquire_lease("fraud", "first", 30)
    with pytest.raises(InvalidInputError, match="feedback status 'done'"):
        mine.commit_cycle("fraud", statuses={"a": "done"}, cursors={}, snapshots={})  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="cursor name"):
        mine.commit_cycle("fraud", statuses={}, cursors={"": {}}, snapshots={})
    with pytest.raises(InvalidInputError, match="snapshot's version"):
        mine.commit_cycle("fraud", statuses={}, cursors={}, snapshots={"1": {}})  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="monitoring snapshot"):
        mine.commit_cycle("fraud", statuses={}, cursors={}, snapshots={1: {"x": float("nan")}})


def test_feedback_totals_follow_settling_and_survive_expiry(store: MonitoringStore) -> None:
    store.add_feedback("fraud", [(f"p{i}", "1") for i in range(6)], source="http")
    store.add_feedback("fraud", [("p0", "1")], source="http")
    store.settle_feedback("fraud", {"p0": "joined", "p1": "joined", "p2": "late"})
    store.settle_feedback("fraud", {"p2": "late", "p3": "unknown", "nope": "joined"})
    store.settle_feedback("fraud", {"p3": "joined"})  # an unknown id whose prediction came
    expected = {"accepted": 6, "duplicate": 1, "pending": 2, "joined": 3, "unknown": 0, "late": 1}
    assert store.feedback_counts("fraud") == expected
    assert store.feedback_counts("other")["accepted"] == 0
    # Nothing settled is older than an hour ago: nothing goes.
    assert store.expire_feedback("fraud", datetime.now(UTC) - timedelta(hours=1)) == 0
    assert store.expire_feedback("fraud", datetime.now(UTC) + timedelta(seconds=1)) == 4
    assert sorted(r.id for r in store.feedback_after("fraud", 0)) == ["p4", "p5"]  # pending stay
    assert store.feedback_counts("fraud") == expected


def test_events_newest_first_reads_the_latest_only(store: MonitoringStore) -> None:
    for i in range(5):
        store.record_event("fraud", 1, "drift.detected", f"k{i}", {"i": i})
    latest = store.events("fraud", limit=2, newest_first=True)
    assert [e.key for e in latest] == ["k4", "k3"]
    assert [e.key for e in store.events("fraud", limit=2)] == ["k0", "k1"]


def test_events_are_read_by_time_range(store: MonitoringStore) -> None:
    for i in range(3):
        store.record_event("fraud", 1, "drift.detected", f"k{i}", {"i": i})
    first, second, third = store.events("fraud")
    assert store.events("fraud", since=second.at) == [second, third]
    assert store.events("fraud", until=second.at) == [first]
    assert store.events("fraud", since=first.at, until=third.at, newest_first=True) == [
        second,
        first,
    ]
    with pytest.raises(InvalidInputError, match="since must be a timezone-aware datetime"):
        store.events("fraud", since=datetime(2026, 1, 1))


def points(version: int, start: datetime, count: int) -> list[HistoryPoint]:
    return [
        HistoryPoint(version, start + timedelta(minutes=i), {"rows_seen": i}) for i in range(count)
    ]


def test_history_is_kept_with_a_cycle_and_read_by_version_and_time(
    store: MonitoringStore,
) -> None:
    start = datetime(2026, 11, 30, 8, tzinfo=UTC)
    mine = store.held_by("first")
    assert store.acquire_lease("fraud", "first", 30)
    mine.commit_cycle(
        "fraud", statuses={}, cursors={}, snapshots={1: {}}, history=points(1, start, 3)
    )
    mine.commit_cycle("fraud", statuses={}, cursors={}, snapshots={}, history=points(2, start, 2))
    history = store.history("fraud", 1)
    assert [p.point["rows_seen"] for p in history] == [0, 1, 2]
    assert [p.at for p in history] == [start + timedelta(minutes=i) for i in range(3)]
    assert {p.version for p in history} == {1}
    assert len(store.history("fraud", 2)) == 2
    assert store.history("fraud", 3) == []
    assert store.history("other", 1) == []
    in_range = store.history("fraud", 1, since=start + timedelta(minutes=1), until=history[2].at)
    assert [p.point["rows_seen"] for p in in_range] == [1]
    # The latest ``limit`` points, oldest first.
    assert [p.point["rows_seen"] for p in store.history("fraud", 1, limit=2)] == [1, 2]
    assert store.history_count("fraud", 1) == 3
    assert store.history_count("fraud", 1, since=start + timedelta(minutes=1)) == 2
    assert store.history_count("fraud", 3) == 0


def test_a_long_history_is_spread_over_its_range(store: MonitoringStore) -> None:
    start = datetime(2026, 11, 30, 8, tzinfo=UTC)
    store.commit_cycle("fraud", statuses={}, cursors={}, snapshots={}, history=points(1, start, 10))

    def seen(**options: Any) -> list[int]:
        return [p.point["rows_seen"] for p in store.history("fraud", 1, **options)]

    assert seen(limit=3) == [7, 8, 9]  # the latest
    assert seen(limit=3, spread=True) == [1, 5, 9]  # every 4th from the newest on
    assert seen(limit=5, spread=True) == [1, 3, 5, 7, 9]
    assert seen(limit=10, spread=True) == list(range(10))
    assert seen(limit=50, spread=True) == list(range(10))
    assert seen(limit=2, spread=True, since=start + timedelta(minutes=6)) == [7, 9]


def test_history_goes_with_its_cycle_or_not_at_all(
    store: MonitoringStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime(2026, 11, 30, 8, tzinfo=UTC)
    mine = store.held_by("first")
    assert store.acquire_lease("fraud", "first", 30)

    def killed(*args: Any) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(monitoring_module, "_put_snapshot", killed)
    with pytest.raises(RuntimeError):
        mine.commit_cycle(
            "fraud", statuses={}, cursors={}, snapshots={1: {}}, history=points(1, start, 1)
        )
    assert store.history("fraud", 1) == []
    with pytest.raises(LeaseLostError):
        store.held_by("second").commit_cycle(
            "fraud", statuses={}, cursors={}, snapshots={}, history=points(1, start, 1)
        )
    assert store.history("fraud", 1) == []


def test_bad_history_is_refused(store: MonitoringStore) -> None:
    now = datetime.now(UTC)
    bad = [
        (HistoryPoint("1", now, {}), "history point's version"),  # type: ignore[arg-type]
        (HistoryPoint(1, datetime(2026, 1, 1), {}), "timezone-aware"),
        (HistoryPoint(1, now, {"x": float("inf")}), "monitoring history point"),
        ({"version": 1}, "a history point is a HistoryPoint"),
    ]
    for point, message in bad:
        with pytest.raises(InvalidInputError, match=message):
            store.commit_cycle("fraud", statuses={}, cursors={}, snapshots={}, history=[point])  # type: ignore[list-item]
    assert store.history("fraud", 1) == []
    with pytest.raises(InvalidInputError, match="limit must be a positive whole number"):
        store.history("fraud", 1, limit=0)
    with pytest.raises(InvalidInputError, match="until must be a timezone-aware"):
        store.history("fraud", 1, until=datetime(2026, 1, 1))
    with pytest.raises(ModelNotFoundError):
        store.history("nope", 1)


def test_old_history_expires_under_the_lease(store: MonitoringStore) -> None:
    start = datetime(2026, 11, 30, 8, tzinfo=UTC)
    store.commit_cycle("fraud", statuses={}, cursors={}, snapshots={}, history=points(1, start, 5))
    store.commit_cycle("other", statuses={}, cursors={}, snapshots={}, history=points(1, start, 5))
    assert store.acquire_lease("fraud", "first", 30)
    with pytest.raises(LeaseLostError):
        store.held_by("second").expire_history("fraud", start + timedelta(hours=1))
    assert store.held_by("first").expire_history("fraud", start + timedelta(minutes=3)) == 3
    assert [p.point["rows_seen"] for p in store.history("fraud", 1)] == [3, 4]
    assert len(store.history("other", 1)) == 5

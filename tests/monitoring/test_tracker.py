"""One model under watch: feedback joins, live performance, drift episodes, restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sklearn import metrics
from sqlalchemy import insert, select

from shipyard.monitoring.config import MonitoringSpec
from shipyard.monitoring.log import prediction_table
from shipyard.monitoring.tracker import uuid7_time_us
from shipyard.registry.tables import FeedbackRow

from .conftest import MODEL, NAMES, OFFLINE, Watched, register_watched


def kinds(watched: Watched) -> list[str]:
    return [event.kind for event in watched.registry.monitoring.events(MODEL)]


def test_live_metrics_equal_sklearn_on_the_joined_rows(watched: Watched) -> None:
    scores = watched.rng.random(400)
    ids = watched.predict(400, scores=scores)
    truth = (watched.rng.random(400) < scores).astype(int)  # calibrated-ish labels
    labelled = slice(0, 400, 2)  # feedback for half of them
    watched.label(ids[labelled], [str(t) for t in truth[labelled]])
    result = watched.tracker().update()
    assert result.rows == 400
    assert result.feedback == {"joined": 200}
    snapshot = watched.registry.monitoring.snapshots(MODEL)[1]
    live = snapshot["performance"]["all"]
    y, s = truth[labelled], scores[labelled]
    assert live["metrics"]["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, s))
    assert live["metrics"]["average_precision"] == pytest.approx(
        metrics.average_precision_score(y, s)
    )
    assert live["metrics"]["brier"] == pytest.approx(metrics.brier_score_loss(y, s))
    assert live["metrics"]["f1"] == pytest.approx(metrics.f1_score(y, s >= 0.5))
    assert live["labelled"] == 200
    assert live["predicted"] == 400
    assert live["coverage"] == 0.5
    assert live["delay"]["p50_s"] >= 0
    assert snapshot["performance"]["offline"] == OFFLINE
    assert snapshot["performance"]["primary"]["metric"] == "average_precision"
    assert snapshot["windows"]["rows"]["rows"] == 400
    assert snapshot["windows"]["rows"]["labelled"] == 200
    assert watched.registry.monitoring.feedback_counts(MODEL)["joined"] == 200


def test_unknown_duplicate_and_late_feedback_is_counted_never_fatal(watched: Watched) -> None:
    ids = watched.predict(300)
    tracker = watched.tracker(index_rows=101)  # a feedback flood larger than the window
    tracker.update()
    watched.label([*ids, "nobody"], ["1"] * 301)
    watched.label(ids[:5], ["0"] * 5)  # duplicates: refused by the store, counted
    watched.clock.advance(1)
    watched.predict(1)  # the log passes the unknown id's feedback by its grace (0 s)
    result = tracker.update()
    assert result.feedback == {"joined": 100, "late": 200, "unknown": 1}
    counts = watched.registry.monitoring.feedback_counts(MODEL)
    assert counts["joined"] == 100
    assert counts["late"] == 200
    assert counts["unknown"] == 1
    assert counts["duplicate"] == 5
    assert counts["pending"] == 0


def test_feedback_ahead_of_its_prediction_waits_for_the_log(watched: Watched) -> None:
    tracker = watched.tracker(grace_s=30.0)
    watched.label(["early"], ["1"])
    assert tracker.update().feedback == {}  # the prediction is not logged yet: pending
    assert watched.registry.monitoring.feedback_counts(MODEL)["pending"] == 1
    # A monitor restarted now still waits for it (pending feedback is reloaded).
    tracker = watched.tracker(grace_s=30.0)
    log_ids(watched, ["early"])
    assert tracker.update().feedback == {"joined": 1}
    watched.label(["never"], ["0"])
    tracker.update()
    watched.clock.advance(31)
    assert tracker.update().feedback == {}  # no prediction logged since: it may yet come
    log_ids(watched, ["later"])
    assert tracker.update().feedback == {"unknown": 1}


def test_feedback_waits_while_the_log_is_behind_and_an_unknown_id_joins_later(
    watched: Watched,
) -> None:
    tracker = watched.tracker(grace_s=10.0)
    watched.label(["held"], ["1"])  # its prediction's record is held back by a sink outage
    watched.clock.advance(600)
    assert tracker.update().feedback == {}  # the log has not moved: still pending
    log_ids(watched, ["held"])  # the sink is back
    assert tracker.update().feedback == {"joined": 1}
    # Settled unknown (another writer moved the log on), then its prediction shows up.
    watched.label(["lost"], ["0"])
    watched.clock.advance(20)
    log_ids(watched, ["other"])
    assert tracker.update().feedback == {"unknown": 1}
    log_ids(watched, ["lost"])
    assert tracker.update().feedback == {"joined": 1}
    counts = watched.registry.monitoring.feedback_counts(MODEL)
    assert (counts["joined"], counts["unknown"]) == (2, 0)
    assert watched.registry.monitoring.snapshots(MODEL)[1]["performance"]["all"]["labelled"] == 2


def test_feedback_committed_below_the_cursor_is_still_joined(watched: Watched) -> None:
    # PostgreSQL takes seq at insert and commits in any order: batch A takes seq n, B n + 1,
    # B commits first. Here A is taken out of the table and put back under its own seq.
    log_ids(watched, ["a", "b", "c"])
    tracker = watched.tracker()
    tracker.update()
    watched.label(["a"], ["1"])
    watched.label(["b"], ["1"])
    taken = uncommit(watched, "a")
    assert tracker.update().feedback == {"joined": 1}  # b; the cursor stays below b
    commit(watched, taken)
    assert tracker.update().feedback == {"joined": 1}  # a, read again above the cursor
    # Once the cursor passed a row, the periodic sweep of pending rows finds a late commit.
    watched.label(["c"], ["0"])
    watched.label(["d"], ["0"])  # no prediction: it waits, pending
    taken = uncommit(watched, "c")
    watched.clock.advance(60)
    tracker.update()
    assert tracker.feedback_seq > taken["seq"]
    commit(watched, taken)
    assert tracker.update().feedback == {}
    watched.clock.advance(300)
    assert tracker.update().feedback == {"joined": 1}
    assert watched.registry.monitoring.feedback_counts(MODEL)["pending"] == 1  # d


def uncommit(watched: Watched, prediction_id: str) -> dict[str, Any]:
    """Take a feedback row out of the table, as if its transaction had not committed."""
    with watched.registry.monitoring._transaction(write=True) as session:
        row = session.scalars(
            select(FeedbackRow).where(FeedbackRow.prediction_id == prediction_id)
        ).one()
        taken = {c.name: getattr(row, c.name) for c in FeedbackRow.__table__.columns}
        session.delete(row)
    return taken


def commit(watched: Watched, taken: dict[str, Any]) -> None:
    """Put a taken row back with its own seq, as its transaction commits."""
    with watched.registry.monitoring._transaction(write=True) as session:
        session.execute(insert(FeedbackRow).values(**taken))


def log_ids(watched: Watched, ids: list[str], source: str = "http") -> list[str]:
    """Log one prediction per given id."""
    features = np.zeros((len(ids), len(NAMES)), dtype=np.float32)
    outputs = {"probability": np.full(len(ids), 0.9), "label": np.ones(len(ids), dtype=np.int64)}
    watched.log.write(
        prediction_table(MODEL, 1, source, ids, NAMES, features, outputs, 1.0, watched.clock.now)
    )
    return ids


def test_a_server_assigned_id_older_than_the_window_is_late(watched: Watched) -> None:
    import uuid_utils

    def made(seconds_ago: float) -> str:
        nanos = int((watched.clock.now.timestamp() - seconds_ago) * 1e9)
        return str(uuid_utils.uuid7(nanoseconds=nanos))

    old, recent = made(7200), made(60)  # the feedback window is one hour
    assert uuid7_time_us("client-id-7") is None
    assert uuid7_time_us(str(uuid_utils.uuid4())) is None
    tracker = watched.tracker(feedback_window_s=3600.0, grace_s=30.0)
    watched.label([old, recent], ["1", "0"])  # neither prediction is in the log
    assert tracker.update().feedback == {"late": 1}  # the recent one waits for the log
    counts = watched.registry.monitoring.feedback_counts(MODEL)
    assert (counts["late"], counts["pending"]) == (1, 1)


def test_drift_is_raised_once_per_episode_and_cleared(watched: Watched) -> None:
    watched.predict(500)
    tracker = watched.tracker()
    result = tracker.update()
    snapshot = result.snapshots[1]
    assert snapshot["dataset_drift"]["rows"] is False
    assert kinds(watched) == []
    watched.predict(500, shift=1.0)
    result = tracker.update()
    assert [e.kind for e in result.events] == ["drift.detected"]
    evidence = result.events[0].evidence
    assert set(evidence["features"]) == {"f0", "f1", "f2", "f3"}
    assert evidence["share"] == 1.0
    assert evidence["rows"] == 500
    assert evidence["window"]["kind"] == "rows"
    assert tracker.update().events == []  # the same windows again: nothing new
    restarted = watched.tracker()  # a restart rebuilds the same windows from the log
    assert restarted.update().events == []
    assert kinds(watched) == ["drift.detected"]
    watched.predict(500)
    watched.clock.advance(1)
    restarted = watched.tracker(window_minutes=1e-3)  # the time window holds nothing now
    assert [e.kind for e in restarted.update().events] == ["drift.cleared"]
    watched.predict(500, shift=1.0)
    assert [e.kind for e in restarted.update().events] == ["drift.detected"]
    keys = [event.key for event in watched.registry.monitoring.events(MODEL)]
    assert keys == ["drift.detected:v1:1", "drift.cleared:v1:1", "drift.detected:v1:2"]


def test_a_window_that_is_not_full_gives_no_verdict(watched: Watched) -> None:
    watched.predict(100, shift=3.0)
    result = watched.tracker(window_minutes=60.0).update()  # min_rows 200 by default
    assert result.snapshots[1]["dataset_drift"] == {"rows": None, "time": None}
    assert result.events == []


def test_performance_degradation_is_raised_with_its_evidence(watched: Watched) -> None:
    scores = watched.rng.random(400)
    ids = watched.predict(400, scores=scores)
    wrong = [str(int(s < 0.5)) for s in scores]  # every label contradicts the model
    watched.label(ids, wrong)
    result = watched.tracker().update()
    degraded = [e for e in result.events if e.kind == "performance.degraded"]
    assert len(degraded) == 1
    evidence = degraded[0].evidence
    assert evidence["metric"] == "average_precision"
    assert evidence["offline"] == OFFLINE["average_precision"]
    assert evidence["live"] < evidence["offline"] - evidence["margin"]
    assert evidence["rows"] == 400


def test_the_spec_section_stored_with_the_version_sets_the_windows(watched: Watched) -> None:
    spec = MonitoringSpec.model_validate(
        {"windows": {"rows": 50, "min_rows": 10}, "performance": {"metric": "roc_auc"}}
    )
    register_watched(watched.registry, tags={"monitoring": spec.to_tag()})
    watched.predict(80, version=2)
    tracker = watched.tracker(window_rows=None, window_minutes=None)
    snapshot = tracker.update().snapshots[2]
    assert snapshot["windows"]["rows"]["rows"] == 50
    assert snapshot["windows"]["rows"]["full"] is True
    assert snapshot["performance"]["primary"]["metric"] == "roc_auc"


def test_a_version_without_a_profile_has_no_drift_but_has_performance(
    watched: Watched,
) -> None:
    register_watched(watched.registry, profile=False)
    ids = watched.predict(50, version=2)
    watched.label(ids, ["1"] * 50)
    snapshot = watched.tracker().update().snapshots[2]
    assert snapshot["reference_profile"] is False
    assert snapshot["drift"]["rows"]["result"] is None
    assert snapshot["performance"]["all"]["labelled"] == 50


def test_a_redelivered_prediction_is_counted_once(watched: Watched) -> None:
    log_ids(watched, ["m1", "m2"], "stream")
    watched.clock.advance(5)
    log_ids(watched, ["m1"], "stream")  # redelivered after a kill: same id, the new write time
    result = watched.tracker().update()
    assert result.rows == 2
    snapshot = result.snapshots[1]
    assert snapshot["rows_seen"] == 2
    assert snapshot["windows"]["rows"]["rows"] == 2


def test_an_http_id_reused_is_a_new_prediction_and_feedback_joins_the_newest(
    watched: Watched,
) -> None:
    tracker = watched.tracker()
    log_ids(watched, ["r1", "r2"])
    tracker.update()
    watched.clock.advance(5)
    features = np.zeros((1, len(NAMES)), dtype=np.float32)
    outputs = {"probability": np.full(1, 0.2), "label": np.zeros(1, dtype=np.int64)}
    watched.log.write(  # another client request quoting the id r1
        prediction_table(MODEL, 1, "http", ["r1"], NAMES, features, outputs, 1.0, watched.clock.now)
    )
    result = tracker.update()
    assert result.rows == 1
    assert result.snapshots[1]["rows_seen"] == 3
    watched.label(["r1"], ["0"])
    every = tracker.update().snapshots[1]["performance"]["all"]
    assert every["labelled"] == 1
    assert every["metrics"]["accuracy"] == 1.0  # joined to the newest r1, which said 0


def test_a_model_read_for_the_first_time_starts_at_the_longest_window(watched: Watched) -> None:
    # The test writes every file now; a real log has old rows in old files. With no grace
    # the files written before the tracker starts are as old as their rows for read_new.
    watched.log.grace_seconds = 0.0
    watched.predict(100, ago_s=3 * 3600)  # older than every window: never read
    watched.predict(30, ago_s=600)
    watched.clock.now = datetime.now(UTC) + timedelta(seconds=1)  # after those files
    tracker = watched.tracker(feedback_window_s=3600.0, window_minutes=60.0)
    assert tracker.update().rows == 30
    assert tracker.log_cursor is not None  # then the log is followed from there
    assert watched.tracker().update().rows == 0  # a restart rebuilds the same rows


def test_metrics_over_every_label_are_computed_again_only_on_new_labels(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shipyard.monitoring.tracker as tracker_module
    from shipyard.monitoring.performance import Cumulative

    sizes: list[int] = []
    totals: list[int] = []
    real, real_totals = tracker_module.live_metrics, Cumulative.metrics

    def counted(info: Any, truth: Any, scores: Any, predicted: Any) -> Any:
        sizes.append(len(truth))
        return real(info, truth, scores, predicted)

    def counted_totals(self: Cumulative) -> Any:
        totals.append(self.labelled)
        return real_totals(self)

    monkeypatch.setattr(tracker_module, "live_metrics", counted)
    monkeypatch.setattr(Cumulative, "metrics", counted_totals)
    ids = watched.predict(20)
    watched.label(ids[:10], ["1"] * 10)
    tracker = watched.tracker()
    tracker.update()
    assert (sizes, totals) == ([10, 10], [10])  # the two windows; all, from the totals
    sizes.clear()
    totals.clear()
    watched.predict(5)
    snapshot = tracker.update().snapshots[1]
    assert (sizes, totals) == ([10, 10], [])  # the windows only: no new label
    assert snapshot["performance"]["all"]["predicted"] == 25
    sizes.clear()
    watched.label(ids[10:12], ["0"] * 2)
    tracker.update()
    assert (sizes, totals) == ([12, 12], [12])


def test_a_restart_keeps_the_totals_since_the_version_began_serving(watched: Watched) -> None:
    scores = watched.rng.random(300)
    ids = watched.predict(300, scores=scores, ago_s=7200)  # older than every window
    truth = (watched.rng.random(300) < scores).astype(int)
    watched.label(ids, [str(t) for t in truth])
    tracker = watched.tracker(feedback_window_s=3 * 3600.0, window_minutes=60.0)
    tracker.update()
    scores2 = watched.rng.random(40)
    ids2 = watched.predict(40, scores=scores2)  # rows in the windows, labelled after a save
    before = tracker.update().snapshots[1]
    watched.label(ids2[:20], ["1"] * 20)
    # Restarted (the labels of ids2 joined by no one yet): the old rows are out of every
    # window and of the feedback window, yet "all" still counts them.
    restarted = watched.tracker(feedback_window_s=3600.0, window_minutes=60.0)
    after = restarted.update().snapshots[1]
    assert after["rows_seen"] == before["rows_seen"] == 340
    every = after["performance"]["all"]
    assert every["labelled"] == 320
    assert every["predicted"] == 340
    y = np.concatenate([truth, np.ones(20, dtype=int)])
    s = np.concatenate([scores, scores2[:20]])
    assert every["metrics"]["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, s))
    assert every["metrics"]["brier"] == pytest.approx(metrics.brier_score_loss(y, s))
    assert every["sampled"] is False
    # Another restart with nothing new: the same totals, nothing counted twice.
    again = watched.tracker(feedback_window_s=3600.0, window_minutes=60.0).update()
    assert again.snapshots[1]["rows_seen"] == 340
    assert again.snapshots[1]["performance"]["all"]["labelled"] == 320


def test_a_quiet_versions_count_window_comes_back_full(watched: Watched) -> None:
    watched.log.grace_seconds = 0.0
    watched.clock.advance(-5 * 86400)  # five days ago, a monitor saw 500 rows; then nothing
    watched.predict(500)
    snapshot = watched.tracker().update().snapshots[1]
    assert snapshot["windows"]["rows"]["rows"] == 500
    watched.clock.advance(5 * 86400)
    after = watched.tracker().update().snapshots[1]
    assert after["windows"]["rows"]["rows"] == 500
    assert after["windows"]["rows"]["start"] == snapshot["windows"]["rows"]["start"]
    assert after["rows_seen"] == 500
    assert after["windows"]["time"]["rows"] == 0
    # Never further back than the log's retention.
    short = watched.tracker(retention_s=86400.0).update().snapshots[1]
    assert short["windows"]["rows"]["rows"] == 0
    assert short["rows_seen"] == 500


def test_a_rebuild_reads_at_most_index_rows_the_newest(watched: Watched) -> None:
    watched.predict(300, ago_s=60)
    newest = watched.predict(50)
    tracker = watched.tracker(index_rows=50)
    assert len(tracker.index) == 50
    assert all(pid in tracker.index for pid in newest)
    assert len(tracker.versions[1].rows.recent) == 50


def _killed(*args: Any) -> None:
    raise RuntimeError("killed")  # the process dies inside the cycle's commit


def test_a_cycle_killed_in_its_commit_counts_no_row_twice(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.registry import monitoring as store_module

    tracker = watched.tracker()
    watched.predict(100)
    assert tracker.update().snapshots[1]["rows_seen"] == 100
    watched.predict(50)
    monkeypatch.setattr(store_module, "_put_snapshot", _killed)
    with pytest.raises(RuntimeError):
        tracker.update()  # statuses, totals and cursors were written, then rolled back
    monkeypatch.undo()
    after = watched.tracker().update().snapshots[1]
    assert after["rows_seen"] == 150


def test_a_label_joined_out_of_order_survives_a_kill(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.registry import monitoring as store_module

    ids = watched.predict(5)
    watched.label(ids[:2], ["1", "1"])
    tracker = watched.tracker()
    tracker.update()
    watched.label(["x"], ["1"])  # its prediction is not in the log yet: pending
    watched.label(ids[2:3], ["1"])  # a higher seq, joined first
    assert tracker.update().feedback == {"joined": 1}
    log_ids(watched, ["x"])
    monkeypatch.setattr(store_module, "_put_snapshot", _killed)
    with pytest.raises(RuntimeError):
        tracker.update()  # x joined, killed before anything was saved
    monkeypatch.undo()
    restarted = watched.tracker()
    result = restarted.update()
    assert result.feedback == {"joined": 1}
    assert result.snapshots[1]["performance"]["all"]["labelled"] == 4
    # And once more: the restored labels are not counted again.
    again = watched.tracker().update().snapshots[1]["performance"]["all"]
    assert again["labelled"] == 4

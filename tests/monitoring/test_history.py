"""A version's monitoring over time: which cycles are kept, what a point holds, reading it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shipyard.errors import NotFoundError
from shipyard.monitoring.history import history_document, history_point

from .conftest import MODEL, NAMES, OFFLINE, Watched


def test_a_point_holds_the_numbers_of_its_snapshot(watched: Watched) -> None:
    scores = watched.rng.random(400)
    ids = watched.predict(400, scores=scores)
    watched.label(ids[::2], ["1" if s > 0.5 else "0" for s in scores[::2]])
    result = watched.tracker(history_s=60.0).update()
    snapshot = result.snapshots[1]
    [kept] = watched.registry.monitoring.history(MODEL, 1)
    assert kept.point == history_point(snapshot)
    assert kept.at.isoformat() == snapshot["updated_at"]
    point = kept.point
    assert point["rows_seen"] == 400
    for kind in ("all", "rows", "time"):
        live = snapshot["performance"][kind]
        assert point["performance"][kind]["metrics"] == live["metrics"]
        assert point["performance"][kind]["labelled"] == live["labelled"] == 200
        assert point["performance"][kind]["coverage"] == live["coverage"]
    assert "offline" not in point["performance"]  # a version's offline metrics never change
    for kind in ("rows", "time"):
        result_ = snapshot["drift"][kind]["result"]
        drift = point["drift"][kind]
        assert set(drift["features"]) == set(NAMES)
        assert drift["features"] == {n: f["statistic"] for n, f in result_["features"].items()}
        assert drift["share"] == result_["share"]
        assert drift["score"] == result_["score"]["statistic"]
        assert drift["verdict"] == snapshot["drift"][kind]["verdict"]
        assert drift["drifted"] == sorted(n for n, f in result_["features"].items() if f["drifted"])
    assert point["windows"]["rows"] == {"rows": 400, "labelled": 200}
    assert point["episodes"] == {"drift": False, "performance": False}


def test_a_point_is_kept_every_interval_and_whenever_a_verdict_changes(watched: Watched) -> None:
    watched.predict(500)
    tracker = watched.tracker(history_s=60.0)
    tracker.update()  # a tracker's first cycle is kept
    watched.clock.advance(30)
    tracker.update()  # 30 s later, nothing changed: thinned away
    assert len(watched.registry.monitoring.history(MODEL, 1)) == 1
    watched.predict(500, shift=1.0)
    watched.clock.advance(1)
    result = tracker.update()  # drift detected: kept although 31 s after the last point
    assert [e.kind for e in result.events] == ["drift.detected"]
    history = watched.registry.monitoring.history(MODEL, 1)
    assert [p.point["drift"]["rows"]["verdict"] for p in history] == [False, True]
    assert [p.point["episodes"]["drift"] for p in history] == [False, True]
    watched.clock.advance(59)
    tracker.update()
    assert len(watched.registry.monitoring.history(MODEL, 1)) == 2
    watched.clock.advance(1)
    tracker.update()  # 60 s after the last point
    history = watched.registry.monitoring.history(MODEL, 1)
    assert len(history) == 3
    assert history[2].at - history[1].at == timedelta(seconds=60)
    # A restarted monitor keeps its first cycle, so `shipyard monitor --once` leaves a point.
    watched.tracker(history_s=60.0).update()
    assert len(watched.registry.monitoring.history(MODEL, 1)) == 4


def test_every_cycle_is_kept_with_an_interval_of_zero(watched: Watched) -> None:
    watched.predict(10)
    tracker = watched.tracker(history_s=0.0)
    for _ in range(3):
        tracker.update()
    assert len(watched.registry.monitoring.history(MODEL, 1)) == 3


def test_a_refused_cycle_keeps_no_point_and_the_next_one_does(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched.predict(10)
    tracker = watched.tracker(history_s=60.0)
    offered: list[list[object]] = []

    def refused(*args: object, history: list[object], **kwargs: object) -> None:
        offered.append(history)
        raise RuntimeError("database went away")

    monkeypatch.setattr(tracker.store, "commit_cycle", refused)
    with pytest.raises(RuntimeError):
        tracker.update()
    monkeypatch.undo()
    assert len(offered[0]) == 1  # the point went with the refused cycle...
    assert watched.registry.monitoring.history(MODEL, 1) == []
    # ... and is still due: the schedule only counts what was committed.
    snapshot = watched.registry.monitoring.snapshots(MODEL).get(1) or {"episodes": {}}
    assert len(tracker.history.due({1: snapshot}, watched.clock())) == 1
    watched.tracker(history_s=60.0).update()  # the monitor drops a failed tracker
    assert len(watched.registry.monitoring.history(MODEL, 1)) == 1


def test_the_document_names_the_range_the_rules_and_the_points(watched: Watched) -> None:
    watched.predict(500)
    tracker = watched.tracker(history_s=0.0)
    tracker.update()
    watched.clock.advance(10)
    tracker.update()
    points = watched.registry.monitoring.history(MODEL, 1)
    document = history_document(watched.registry, MODEL, 1)
    assert document["model"] == MODEL
    assert document["version"] == 1
    assert document["offline"] == OFFLINE
    assert document["primary"]["metric"] == "average_precision"
    rules = document["drift_rules"]
    assert rules["drift_share"] == 0.5
    assert set(rules["features"]) == {*NAMES, "score"}
    assert {r["drifts"] for r in rules["features"].values()} <= {"above", "below"}
    assert [p["at"] for p in document["points"]] == [p.at.isoformat() for p in points]
    assert document["points"][0]["rows_seen"] == 500
    assert "hint" not in document
    later = history_document(watched.registry, MODEL, 1, since=points[1].at)
    assert len(later["points"]) == 1
    assert later["since"] == points[1].at.isoformat()
    assert len(history_document(watched.registry, MODEL, 1, limit=1)["points"]) == 1
    empty = history_document(watched.registry, MODEL, 1, until=points[0].at)
    assert empty["points"] == []
    assert "shipyard monitor" in empty["hint"]
    with pytest.raises(NotFoundError, match="version 7"):
        history_document(watched.registry, MODEL, 7)
    with pytest.raises(NotFoundError, match="nope"):
        history_document(watched.registry, "nope", 1)

"""Retraining on evidence: labelled production rows → run → gate → promotion, with events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retraining import MODEL, RETRAIN, copy_of_production, serve_traffic
from shipyard.monitoring.log import open_prediction_log
from shipyard.monitoring.retraining import MANUAL, Trigger
from shipyard.pipeline.retrain import PipelineRetrainer
from shipyard.registry import Registry
from shipyard.settings import Settings


def retrainer(registry: Registry, settings: Settings, owner: str = "test") -> PipelineRetrainer:
    log = open_prediction_log(settings)
    assert log is not None
    return PipelineRetrainer(registry, log, settings, owner=owner)


def manual(key: str = "manual:1") -> Trigger:
    return Trigger(MANUAL, key)


def kinds(registry: Registry) -> list[str]:
    return [e.kind for e in registry.monitoring.events(MODEL)]


@pytest.fixture
def production(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Settings:
    """fraud v1 in production, trained with the retrain section, on SQLite."""
    return copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "trained-home")


def test_concept_drift_retrains_and_the_candidate_wins_the_gate(production: Settings) -> None:
    serve_traffic(production, 4000, seed=11, drift="concept", strength=0.05)
    with Registry.open(production) as registry:
        outcome = retrainer(registry, production).retrain(MODEL, manual())
        assert outcome.status == "promoted", outcome.reason
        assert outcome.candidate == 2
        assert registry.get_version(f"{MODEL}@production").version == 2
        assert kinds(registry) == [
            "retrain.triggered",
            "retrain.trained",
            "retrain.gated",
            "model.promoted",
        ]
        gated = registry.monitoring.events(MODEL, kind="retrain.gated")[0].evidence
        assert gated["won"] is True
        assert gated["candidate"]["value"] > gated["current"]["value"] + 0.01
        assert gated["holdout"]["rows"] == 1200  # the newest 30 % of 4,000
        trained = registry.monitoring.events(MODEL, kind="retrain.trained")[0].evidence
        assert trained["rows"] == {
            "labelled": 4000,
            "train": 2800,  # generated rows: no copy of a held-out row to drop
            "original": 0,
            "holdout": 1200,
            "dropped_as_holdout_copies": 0,
            "original_dropped_as_holdout_copies": 0,
        }
        candidate = registry.get_version(f"{MODEL}:2")
        assert candidate.tags["retrained_from"] == "1"
        assert "retrain" in candidate.tags  # the new production carries the rules on
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.outcome == "promoted"


def test_without_drift_the_candidate_loses_and_is_not_promoted(production: Settings) -> None:
    serve_traffic(production, 4000, seed=12)
    with Registry.open(production) as registry:
        outcome = retrainer(registry, production).retrain(MODEL, manual())
        assert outcome.status == "lost", outcome.reason
        assert "lost the gate" in outcome.reason
        assert registry.get_version(f"{MODEL}@production").version == 1
        assert registry.list_versions(MODEL)[-1].version == 2  # registered all the same
        gated = registry.monitoring.events(MODEL, kind="retrain.gated")[0].evidence
        assert gated["won"] is False
        assert "model.promoted" not in kinds(registry)


def label(settings: Settings, ids: list[str], labels: list[str]) -> None:
    with Registry.open(settings) as registry:
        registry.monitoring.add_feedback(MODEL, list(zip(ids, labels, strict=True)), source="file")


def test_a_failing_training_leaves_production_alone_and_says_why(production: Settings) -> None:
    """Every older label says legitimate: the train stage gets a single class and fails."""
    ids = serve_traffic(production, 1000, seed=13, label=False)
    labels = ["0"] * 700 + [str(i % 2) for i in range(300)]  # the gate's newest rows: both
    label(production, ids, labels)
    with Registry.open(production) as registry:
        outcome = retrainer(registry, production).retrain(MODEL, manual())
        assert outcome.status == "failed"
        assert "has a single class" in outcome.reason
        failed = registry.monitoring.events(MODEL, kind="retrain.failed")[0].evidence
        assert "a classifier needs at least two" in failed["reason"]
        assert registry.get_version(f"{MODEL}@production").version == 1
        assert [v.version for v in registry.list_versions(MODEL)] == [1]  # nothing registered
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.outcome == "failed"
        assert attempt.run_id is not None
        assert registry.get_run(attempt.run_id).status == "failed"
        assert attempt.cooled_at is not None  # a failure cools down too: no retry storm


def test_too_few_labelled_rows_wait_and_the_same_trigger_retrains_once_they_come(
    production: Settings,
) -> None:
    serve_traffic(production, 300, seed=14)
    trigger = Trigger("drift.detected", "drift.detected:v1:1", 1)
    with Registry.open(production) as registry:
        outcome = retrainer(registry, production).retrain(MODEL, trigger)
        assert outcome.status == "waiting"
        assert not outcome.done  # the monitor keeps its cursor before the evidence
        assert outcome.reason == ("too few rows: 300 labelled predictions, data.min_rows is 500")
        assert kinds(registry) == ["retrain.skipped"]  # no "triggered": nothing to train on
        [skipped] = registry.monitoring.events(MODEL)
        assert skipped.key == "retrain.skipped:drift.detected:v1:1:too-few-rows"
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.outcome == "waiting"
        assert attempt.cooled_at is None  # no cooldown: the next cycle may try again
        # Asked again (the next cycle), still too few: the event is not told twice.
        again = retrainer(registry, production).retrain(MODEL, trigger)
        assert again.status == "waiting"
        assert again.events == []
        assert kinds(registry) == ["retrain.skipped"]
        assert len(registry.list_versions(MODEL)) == 1
    serve_traffic(production, 1000, seed=16)
    with Registry.open(production) as registry:
        later = retrainer(registry, production).retrain(MODEL, trigger)
        assert later.status in ("promoted", "lost"), later.reason
        assert "retrain.triggered" in kinds(registry)
        [triggered] = registry.monitoring.events(MODEL, kind="retrain.triggered")
        assert triggered.evidence["trigger"]["key"] == "drift.detected:v1:1"


def test_a_trigger_waits_for_labelled_rows_predicted_after_it(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """data.after_trigger: a drift seen just now has no labelled row of the new regime yet,
    so the retrain waits for them instead of training on the old one."""
    rules = RETRAIN.replace("data: {min_rows: 500}", "data: {min_rows: 500, after_trigger: 300}")
    assert "after_trigger: 300" in rules
    settings = copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "home", rules)
    serve_traffic(settings, 1000, seed=17, drift="concept", strength=0.05)
    seen = datetime.now(UTC) + timedelta(hours=1)  # after every row logged
    with Registry.open(settings) as registry:
        early = Trigger("drift.detected", "drift.detected:v1:1", 1, at=seen)
        outcome = retrainer(registry, settings).retrain(MODEL, early)
        assert outcome.status == "waiting"
        assert not outcome.done
        assert outcome.reason.startswith(
            "too few rows after the trigger: 0 labelled predictions made since"
        )
        assert outcome.reason.endswith("(drift.detected), data.after_trigger is 300")
        [skipped] = registry.monitoring.events(MODEL)
        assert skipped.key == "retrain.skipped:drift.detected:v1:1:too-few-after"
        assert skipped.evidence["after"] == 0
        assert len(registry.list_versions(MODEL)) == 1
        # A hand or a schedule has no regime to wait for.
        by_hand = retrainer(registry, settings).retrain(MODEL, manual())
        assert by_hand.status in ("promoted", "lost"), by_hand.reason
    # The same drift seen an hour earlier: all 1,000 rows came after it.
    settings = copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "again", rules)
    serve_traffic(settings, 1000, seed=17, drift="concept", strength=0.05)
    with Registry.open(settings) as registry:
        seen = datetime.now(UTC) - timedelta(hours=1)
        late = Trigger("drift.detected", "drift.detected:v1:1", 1, at=seen)
        outcome = retrainer(registry, settings).retrain(MODEL, late)
        assert outcome.status in ("promoted", "lost"), outcome.reason


def test_cooldown_and_in_flight_refuse_until_forced(production: Settings) -> None:
    serve_traffic(production, 1000, seed=15)
    with Registry.open(production) as registry:
        first = retrainer(registry, production).retrain(MODEL, manual("manual:1"))
        assert first.status in ("promoted", "lost"), first.reason
        cooling = retrainer(registry, production).retrain(MODEL, manual("manual:2"))
        assert cooling.status == "waiting"
        assert cooling.reason.startswith("cooldown: the last retrain ended at ")
        assert not cooling.done
        skipped = registry.monitoring.events(MODEL, kind="retrain.skipped")
        assert [e.key for e in skipped] == ["retrain.skipped:manual:2:cooldown"]
        # Held by another (live) attempt: refused even when forced.
        held = registry.retraining.begin(
            MODEL, attempt="other", owner="elsewhere", trigger="manual:x", ttl_seconds=600
        )
        assert held.attempt is not None
        busy = retrainer(registry, production).retrain(MODEL, manual("manual:3"), force=True)
        assert busy.status == "waiting"
        assert "in flight: attempt other of elsewhere" in busy.reason
        registry.retraining.finish(MODEL, "other", "lost", cool=False)
        forced = retrainer(registry, production).retrain(MODEL, manual("manual:4"), force=True)
        assert forced.status in ("promoted", "lost"), forced.reason


def test_a_model_whose_spec_has_no_retrain_section_is_skipped(
    tmp_path: Path, sqlite_settings: Settings
) -> None:
    from retraining import spec_text, train_production

    train_production(sqlite_settings, tmp_path, rows=2000, text=spec_text(retrain=None))
    with Registry.open(sqlite_settings) as registry:
        outcome = retrainer(registry, sqlite_settings).retrain(MODEL, manual())
        assert outcome.status == "skipped"
        assert outcome.reason == "the spec of fraud:1 has no retrain: section"
        assert registry.retraining.get(MODEL) is None  # not even the lock was taken

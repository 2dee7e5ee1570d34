"""A candidate in shadow, for real: the retrain leaves its hold-out winner behind the shadow
alias; live requests both versions scored, labelled, decide its promotion (SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retraining import MODEL, RETRAIN, copy_of_production, serve_traffic
from shipyard.errors import AliasNotFoundError
from shipyard.monitoring.log import open_prediction_log
from shipyard.monitoring.retraining import MANUAL, Trigger
from shipyard.pipeline import shadowing
from shipyard.pipeline.gate import Verdict, judge
from shipyard.pipeline.retrain import PipelineRetrainer
from shipyard.pipeline.shadowing import follow_shadow
from shipyard.registry import SHADOW_ALIAS, Registry
from shipyard.settings import Settings

SHADOW = RETRAIN.replace("holdout: 0.3}", "holdout: 0.3, shadow: 300, shadow_timeout: 1h}")


def retrainer(registry: Registry, settings: Settings) -> PipelineRetrainer:
    log = open_prediction_log(settings)
    assert log is not None
    return PipelineRetrainer(registry, log, settings, owner="test")


def kinds(registry: Registry) -> list[str]:
    return [e.kind for e in registry.monitoring.events(MODEL)]


@pytest.fixture
def production(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Settings:
    """fraud v1 in production, whose retrain section says ``gate.shadow: 300``."""
    assert "shadow: 300" in SHADOW
    return copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "home", SHADOW)


def into_shadow(settings: Settings, registry: Registry) -> PipelineRetrainer:
    """Concept drift, a retrain whose candidate wins the hold-out: v2 goes into shadow."""
    serve_traffic(settings, 4000, seed=11, drift="concept", strength=0.05)
    retraining = retrainer(registry, settings)
    outcome = retraining.retrain(MODEL, Trigger(MANUAL, "manual:1"))
    assert outcome.status == "shadowing", outcome.reason
    assert outcome.candidate == 2
    assert "until 300 of them are labelled" in outcome.reason
    assert registry.get_version(f"{MODEL}@production").version == 1
    assert registry.get_version(f"{MODEL}@{SHADOW_ALIAS}").version == 2
    assert kinds(registry) == [
        "retrain.triggered",
        "retrain.trained",
        "retrain.gated",
        "retrain.shadowing",
    ]
    opened = registry.monitoring.events(MODEL, kind="retrain.shadowing")[0]
    assert opened.version == 2
    assert opened.evidence["labelled"] == 300
    assert opened.evidence["production"] == 1
    deadline = datetime.fromisoformat(opened.evidence["deadline"])
    assert timedelta(minutes=59) < deadline - opened.at <= timedelta(hours=1)
    attempt = registry.retraining.get(MODEL)
    assert attempt is not None
    assert (attempt.outcome, attempt.cooled_at) == ("shadowing", None)  # cools once judged
    return retraining


def test_a_candidate_that_wins_in_shadow_is_promoted(production: Settings) -> None:
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        # Open: no retrain starts, and nothing to judge yet.
        again = retraining.retrain(MODEL, Trigger(MANUAL, "manual:2"))
        assert again.status == "waiting"
        assert "fraud:2 is in shadow: no retrain starts until it is judged" in again.reason
        waiting = retraining.follow_shadow(MODEL)
        assert waiting is not None
        assert (waiting.status, waiting.reason) == (
            "shadowing",
            "fraud:2 in shadow: 0 labels since it opened, of the 300 it needs",
        )
        # 200 labelled, then 100 more: judged on those 300 (the first included, though
        # production logged it before the shadow did), whose labels agree with the candidate.
        serve_traffic(production, 200, seed=31, drift="concept", shadow=2, truth="shadow")
        assert retraining.follow_shadow(MODEL).reason.endswith(
            "200 labels since it opened, of the 300 it needs"
        )  # type: ignore[union-attr]
        serve_traffic(production, 100, seed=32, drift="concept", shadow=2, truth="shadow")
        outcome = retraining.follow_shadow(MODEL)
        assert outcome is not None
        assert outcome.status == "promoted", outcome.reason
        assert "on the 300 labelled live requests both scored" in outcome.reason
        assert registry.get_version(f"{MODEL}@production").version == 2
        with pytest.raises(AliasNotFoundError):
            registry.get_version(f"{MODEL}@{SHADOW_ALIAS}")
        assert [e.kind for e in outcome.events] == ["retrain.gated", "model.promoted"]
        assert kinds(registry)[-2:] == ["retrain.gated", "model.promoted"]
        gated = outcome.events[0].evidence
        assert gated["won"] is True
        assert (gated["shadow"]["rows"], gated["shadow"]["needed"]) == (300, 300)
        assert "holdout" not in gated
        assert gated["candidate"]["value"] >= gated["current"]["value"] + 0.01
        promoted = outcome.events[1].evidence
        assert (promoted["from"], promoted["to"], promoted["shadow"]) == (1, 2, True)
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.cooled_at is not None  # the cooldown starts with the verdict
        assert retraining.follow_shadow(MODEL) is None  # settled: once


def test_a_candidate_that_loses_in_shadow_stays_unpromoted(production: Settings) -> None:
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        # The labels agree with production's answers: the candidate cannot beat it.
        serve_traffic(production, 400, seed=33, drift="concept", shadow=2, truth="production")
        # Rows production answered but the candidate never scored do not count.
        serve_traffic(production, 100, seed=34, drift="concept", truth="production")
        outcome = retraining.follow_shadow(MODEL)
        assert outcome is not None
        assert outcome.status == "lost", outcome.reason
        assert "lost the gate in shadow" in outcome.reason
        assert registry.get_version(f"{MODEL}@production").version == 1
        with pytest.raises(AliasNotFoundError):
            registry.get_version(f"{MODEL}@{SHADOW_ALIAS}")
        [gated] = outcome.events
        assert gated.kind == "retrain.gated"
        assert gated.evidence["won"] is False
        assert gated.evidence["shadow"]["rows"] == 300  # exactly the first N
        assert "model.promoted" not in kinds(registry)
        # Judged: the cooldown runs, so the next retrain waits for it, not for a shadow.
        again = retraining.retrain(MODEL, Trigger(MANUAL, "manual:3"))
        assert again.status == "waiting"
        assert again.reason.startswith("cooldown")


def test_a_shadow_without_enough_labels_by_its_deadline_is_abandoned(
    production: Settings,
) -> None:
    with Registry.open(production) as registry:
        into_shadow(production, registry)
        serve_traffic(production, 100, seed=35, drift="concept", shadow=2)
        log = open_prediction_log(production)
        assert log is not None
        opened = registry.monitoring.events(MODEL, kind="retrain.shadowing")[0]
        deadline = datetime.fromisoformat(opened.evidence["deadline"])
        before = follow_shadow(registry, log, MODEL, deadline - timedelta(seconds=1))
        assert before is not None
        assert before.status == "shadowing"
        outcome = follow_shadow(registry, log, MODEL, deadline)
        assert outcome is not None
        assert outcome.status == "abandoned"
        assert "had 100 labels since it opened, of the 300 it needs by" in outcome.reason
        assert [e.kind for e in outcome.events] == ["retrain.abandoned"]
        assert registry.get_version(f"{MODEL}@production").version == 1
        assert [v.aliases for v in registry.list_versions(MODEL)] == [["production"], []]
        assert follow_shadow(registry, log, MODEL, deadline) is None


def test_a_shadow_whose_production_moved_by_hand_is_abandoned(production: Settings) -> None:
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        registry.promote(f"{MODEL}:2", actor="alice", event=True)
        outcome = retraining.follow_shadow(MODEL)
        assert outcome is not None
        assert outcome.status == "abandoned"
        assert "production moved from v1 to v2 while fraud:2 was in shadow" in outcome.reason
        with pytest.raises(AliasNotFoundError):
            registry.get_version(f"{MODEL}@{SHADOW_ALIAS}")


def test_labels_of_one_class_keep_the_shadow_waiting(production: Settings) -> None:
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        ids = serve_traffic(production, 400, seed=36, shadow=2, label=False)
        registry.monitoring.add_feedback(MODEL, [(i, "0") for i in ids], source="file")
        outcome = retraining.follow_shadow(MODEL)
        assert outcome is not None
        assert outcome.status == "shadowing"  # no metric ranks one class: not "lost"
        assert outcome.reason == (
            "fraud:2 in shadow: 400 of 300 labelled rows (the first of one class)"
        )
        assert registry.get_version(f"{MODEL}@{SHADOW_ALIAS}").version == 2


def test_first_labels_of_one_class_run_on_to_the_first_of_the_other(
    production: Settings,
) -> None:
    """Rare fraud: the first 300 labels are all legitimate; the verdict takes the rows on to
    the first fraud (the 500th) rather than waiting for its deadline."""
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        first = serve_traffic(production, 200, seed=37, shadow=2, label=False)
        registry.monitoring.add_feedback(MODEL, [(i, "0") for i in first], source="file")
        then = serve_traffic(production, 300, seed=38, shadow=2, label=False)
        labels = [(i, "1" if n == len(then) - 1 else "0") for n, i in enumerate(then)]
        registry.monitoring.add_feedback(MODEL, labels, source="file")
        judged = retraining.follow_shadow(MODEL)
        assert judged is not None
        assert judged.status in ("promoted", "lost"), judged.reason
        gated = judged.events[0].evidence
        assert (gated["shadow"]["rows"], gated["shadow"]["needed"]) == (500, 300)


def test_a_shadow_moved_there_by_hand_is_abandoned_each_time(production: Settings) -> None:
    """No retrain.shadowing event says what to judge it on: ended, and again the next time
    the same version is put there (each ending is keyed by the move that opened it)."""
    with Registry.open(production) as registry:
        log = open_prediction_log(production)
        assert log is not None
        retraining = PipelineRetrainer(registry, log, production, owner="test")
        serve_traffic(production, 4000, seed=11, drift="concept", strength=0.05)
        assert retraining.retrain(MODEL, Trigger(MANUAL, "manual:1")).status == "shadowing"
        registry.retraining.close_shadow(MODEL, 2, promote_over=None, actor="t", events=[])
        for _ in range(2):
            registry.promote(f"{MODEL}:2", SHADOW_ALIAS, actor="alice")
            outcome = follow_shadow(registry, log, MODEL, datetime.now(UTC))
            assert outcome is not None
            assert outcome.status == "abandoned", outcome.reason
            assert "without a retrain.shadowing event" in outcome.reason
            with pytest.raises(AliasNotFoundError):
                registry.get_version(f"{MODEL}@{SHADOW_ALIAS}")
        abandoned = registry.monitoring.events(MODEL, kind="retrain.abandoned")
        assert len({e.key for e in abandoned}) == 2


def test_a_candidate_that_cannot_be_judged_fails_and_is_never_promoted(
    production: Settings,
) -> None:
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        serve_traffic(production, 300, seed=37, drift="concept", shadow=2, truth="shadow")
        # v2's artifact is changed in the store: loading it to judge it is refused.
        candidate = registry.get_version(f"{MODEL}:2")
        path = registry.store.path_of(candidate.manifest_digest)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        outcome = retraining.follow_shadow(MODEL)
        assert outcome is not None
        assert outcome.status == "failed", outcome.reason
        assert "could not be judged in shadow: Artifact" in outcome.reason
        assert [e.kind for e in outcome.events] == ["retrain.failed"]
        assert registry.get_version(f"{MODEL}@production").version == 1
        with pytest.raises(AliasNotFoundError):
            registry.get_version(f"{MODEL}@{SHADOW_ALIAS}")


def test_production_moved_between_the_verdict_and_the_promotion(
    production: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Registry.open(production) as registry:
        retraining = into_shadow(production, registry)
        serve_traffic(production, 300, seed=38, drift="concept", shadow=2, truth="shadow")

        def judge_then_move(*args: Any, **kwargs: Any) -> Verdict:
            verdict = judge(*args, **kwargs)  # the real verdict; then a person moves production
            registry.promote(f"{MODEL}:2", actor="alice")
            return verdict

        monkeypatch.setattr(shadowing, "judge", judge_then_move)
        outcome = retraining.follow_shadow(MODEL)
        assert outcome is not None
        assert outcome.status == "failed", outcome.reason
        assert "won in shadow but was not promoted" in outcome.reason
        assert [e.kind for e in outcome.events] == ["retrain.failed"]
        assert "model.promoted" not in kinds(registry)  # alice's move was not an event
        with pytest.raises(AliasNotFoundError):
            registry.get_version(f"{MODEL}@{SHADOW_ALIAS}")

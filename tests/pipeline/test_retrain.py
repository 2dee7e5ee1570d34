"""Retraining on evidence: labelled production rows → run → gate → promotion, with events."""

from __future__ import annotations

from pathlib import Path

import pytest

from retraining import MODEL, copy_of_production, serve_traffic
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
def home(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Settings:
    """fraud v1 in production, trained with the retrain section, on SQLite."""
    return copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "trained-home")


def test_concept_drift_retrains_and_the_candidate_wins_the_gate(home: Settings) -> None:
    serve_traffic(home, 4000, seed=11, drift="concept", strength=0.05)
    with Registry.open(home) as registry:
        outcome = retrainer(registry, home).retrain(MODEL, manual())
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
        assert trained["rows"] == {"labelled": 4000, "train": 2800, "original": 0, "holdout": 1200}
        candidate = registry.get_version(f"{MODEL}:2")
        assert candidate.tags["retrained_from"] == "1"
        assert "retrain" in candidate.tags  # the new production carries the rules on
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.outcome == "promoted"


def test_without_drift_the_candidate_loses_and_is_not_promoted(home: Settings) -> None:
    serve_traffic(home, 4000, seed=12)
    with Registry.open(home) as registry:
        outcome = retrainer(registry, home).retrain(MODEL, manual())
        assert outcome.status == "lost", outcome.reason
        assert "lost the gate" in outcome.reason
        assert registry.get_version(f"{MODEL}@production").version == 1
        assert registry.list_versions(MODEL)[-1].version == 2  # registered all the same
        gated = registry.monitoring.events(MODEL, kind="retrain.gated")[0].evidence
        assert gated["won"] is False
        assert "model.promoted" not in kinds(registry)

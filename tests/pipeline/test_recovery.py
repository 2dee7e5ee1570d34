"""Abandoning a stale retrain attempt: the events told of what it left, and the actor its
promotion is found by in the alias history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from retraining import MODEL, copy_of_production, serve_traffic
from shipyard.monitoring.log import open_prediction_log
from shipyard.monitoring.retraining import MANUAL, Trigger
from shipyard.pipeline.recovery import abandonment_events, retrain_actor
from shipyard.pipeline.retrain import PipelineRetrainer
from shipyard.registry import Registry, RetrainAttempt
from shipyard.registry.retraining import Leftovers
from shipyard.registry.tables import AliasEventRow
from shipyard.settings import Settings

STALE = RetrainAttempt(
    model=MODEL,
    attempt="dead",
    owner="m1",
    trigger="manual:1",
    started_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    expires_at=datetime(2026, 1, 1, 12, 1, tzinfo=UTC),
    run_id="r" * 32,
    candidate=None,
    finished_at=None,
    outcome=None,
    cooled_at=None,
)


def test_a_candidate_promoted_before_the_kill_is_recorded_as_promoted() -> None:
    events = abandonment_events(Leftovers(STALE, run_failed=True, candidate=2, promoted=True))
    assert [(v, kind, key) for v, kind, key, _ in events] == [
        (2, "model.promoted", "model.promoted:v2"),
        (2, "retrain.abandoned", "retrain.abandoned:dead"),
    ]
    assert events[0][3] == {"alias": "production", "to": 2, "attempt": "dead", "recovered": True}
    abandoned = events[1][3]
    assert abandoned["run"] == "marked failed"
    assert (abandoned["candidate"], abandoned["promoted"]) == (2, True)
    assert abandoned["resolution"] == "its candidate was promoted before it stopped"
    assert abandoned["started_at"] == "2026-01-01T12:00:00+00:00"


@pytest.mark.parametrize(
    ("candidate", "resolution"),
    [
        (2, "v2 stays registered and is never promoted; the retrain runs again"),
        (None, "it registered no candidate; the retrain runs again"),
    ],
)
def test_an_unpromoted_stale_attempt_is_told_once(candidate: int | None, resolution: str) -> None:
    left = Leftovers(STALE, run_failed=False, candidate=candidate, promoted=False)
    [(version, kind, key, evidence)] = abandonment_events(left)
    assert (version, kind, key) == (candidate, "retrain.abandoned", "retrain.abandoned:dead")
    assert (evidence["run"], evidence["promoted"]) == (None, False)
    assert evidence["resolution"] == resolution


def test_the_retrainer_promotes_as_the_actor_recovery_looks_for(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Else a stale attempt's landed promotion would be told as never made."""
    production: Settings = copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "home")
    serve_traffic(production, 4000, seed=11, drift="concept", strength=0.05)
    with Registry.open(production) as registry:
        log = open_prediction_log(production)
        assert log is not None
        retrainer = PipelineRetrainer(registry, log, production, owner="test")
        outcome = retrainer.retrain(MODEL, Trigger(MANUAL, "manual:1"))
        assert outcome.status == "promoted", outcome.reason
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        with registry.transaction() as session:
            actors = list(
                session.scalars(select(AliasEventRow.actor).where(AliasEventRow.to_version == 2))
            )
        assert actors == [retrain_actor(attempt.attempt)]

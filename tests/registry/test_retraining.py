"""Retrain locks on SQLite and PostgreSQL: one attempt in flight, the cooldown, a dead
attempt taken over, and a promotion only the holder can make, from the version it judged."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from shipyard.errors import ConflictError, InvalidInputError, ModelNotFoundError
from shipyard.inference import ExportedModel
from shipyard.registry import Begun, Registry
from shipyard.registry.retraining import (
    COOLDOWN,
    IN_FLIGHT,
    SHADOW,
    Abandonment,
    Closed,
    Leftovers,
    PlannedEvent,
)
from shipyard.settings import Settings


@pytest.fixture
def registry(settings: Settings, exported_models: list[ExportedModel]) -> Iterator[Registry]:
    """fraud v1 (production) and v2, on each database."""
    with Registry.open(settings) as opened:
        for exported in exported_models:
            opened.register_version(
                "fraud",
                files=exported.files,
                format=exported.format,
                input_schema=exported.input_schema,
                output_schema=exported.output_schema,
                metrics={"average_precision": 0.5},
            )
        opened.promote("fraud:1")
        yield opened


def test_one_attempt_in_flight_and_the_cooldown_after_it(registry: Registry) -> None:
    first = registry.retraining.begin(
        "fraud", attempt="a1", owner="m1", trigger="manual:1", ttl_seconds=60
    )
    assert first.attempt is not None
    assert first.stale is None
    second = registry.retraining.begin(
        "fraud", attempt="a2", owner="m2", trigger="manual:2", ttl_seconds=60
    )
    assert second.attempt is None
    assert second.refused == IN_FLIGHT
    assert second.blocking is not None
    assert second.blocking.attempt == "a1"
    assert registry.retraining.finish("fraud", "a1", "lost")
    cooling = registry.retraining.begin(
        "fraud", attempt="a3", owner="m2", trigger="manual:3", ttl_seconds=60, cooldown_seconds=3600
    )
    assert cooling.refused == COOLDOWN
    assert cooling.until is not None
    assert cooling.blocking is not None
    assert cooling.blocking.cooled_at is not None
    assert (cooling.until - cooling.blocking.cooled_at).total_seconds() == 3600
    forced = registry.retraining.begin(
        "fraud", attempt="a3", owner="m2", trigger="manual:3", ttl_seconds=60
    )
    assert forced.attempt is not None
    assert forced.attempt.attempt == "a3"
    # A skip does not restart the cooldown: the one of a1 still counts.
    assert registry.retraining.finish("fraud", "a3", "skipped", cool=False)
    latest = registry.retraining.get("fraud")
    assert latest is not None
    assert latest.outcome == "skipped"
    assert latest.cooled_at == cooling.blocking.cooled_at


def test_a_dead_attempt_is_taken_over_and_handed_back_as_stale(registry: Registry) -> None:
    dead = registry.retraining.begin(
        "fraud", attempt="dead", owner="m1", trigger="manual:1", ttl_seconds=0.2
    )
    assert dead.attempt is not None
    registry.retraining.progress("fraud", "dead", run_id="r" * 32, candidate=2)
    time.sleep(0.3)  # the lease is wall-clock by design; only its expiry is waited for
    assert not registry.retraining.renew("fraud", "dead", 60)
    taken = registry.retraining.begin(
        "fraud",
        attempt="next",
        owner="m2",
        trigger="manual:1",
        ttl_seconds=60,
        cooldown_seconds=3600,  # no attempt finished: nothing to cool down from
    )
    assert taken.attempt is not None
    assert taken.stale is not None
    assert (taken.stale.attempt, taken.stale.run_id, taken.stale.candidate) == ("dead", "r" * 32, 2)
    with pytest.raises(ConflictError, match="no longer holds the model's retrain lock"):
        registry.retraining.progress("fraud", "dead", candidate=2)
    assert not registry.retraining.finish("fraud", "dead", "failed")


def told(left: Leftovers) -> list[PlannedEvent]:
    """One event telling what ``begin`` found of a stale attempt."""
    found = {"run_failed": left.run_failed, "candidate": left.candidate, "promoted": left.promoted}
    return [(left.candidate, "retrain.abandoned", f"retrain.abandoned:{left.stale.attempt}", found)]


ABANDON = Abandonment(tag="attempt", actor=lambda attempt: f"by:{attempt}", events=told)


def died(registry: Registry, *, candidate: int | None = None) -> str:
    """Attempt ``dead`` began, started a real run (returned) and died: its lease expired."""
    dead = registry.retraining.begin(
        "fraud", attempt="dead", owner="m1", trigger="manual:1", ttl_seconds=0.2
    )
    assert dead.attempt is not None
    run_id = registry.runs.start("fraud", "spec", {})
    registry.retraining.progress("fraud", "dead", run_id=run_id, candidate=candidate)
    return run_id


def take_over(registry: Registry) -> Begun:
    """Attempt ``next`` takes the lock, once the dead attempt's lease has run out."""
    time.sleep(0.3)  # the lease is wall-clock by design; only its expiry is waited for
    begun = registry.retraining.begin(
        "fraud", attempt="next", owner="m2", trigger="manual:1", ttl_seconds=60, abandon=ABANDON
    )
    assert begun.attempt is not None
    return begun


def test_a_takeover_abandons_the_stale_attempt_in_its_own_transaction(
    registry: Registry, exported_models: list[ExportedModel]
) -> None:
    run_id = died(registry)
    # Registered, then killed before the lock recorded it: found by its attempt tag.
    exported = exported_models[0]
    registry.register_version(
        "fraud",
        files=exported.files,
        format=exported.format,
        input_schema=exported.input_schema,
        output_schema=exported.output_schema,
        metrics={"average_precision": 0.5},
        tags={"attempt": "dead"},
    )
    begun = take_over(registry)
    assert [(e.version, e.key) for e in begun.abandoned] == [(3, "retrain.abandoned:dead")]
    assert begun.abandoned[0].evidence == {"run_failed": True, "candidate": 3, "promoted": False}
    run = registry.get_run(run_id)
    assert run.status == "failed"
    assert run.error == "abandoned: retrain attempt dead stopped (its lock expired)"
    assert registry.monitoring.events("fraud") == list(begun.abandoned)


def test_a_takeover_whose_record_fails_takes_nothing_over(registry: Registry) -> None:
    run_id = died(registry, candidate=2)
    # A real constraint the abandonment's event breaks: one retrain.abandoned per model,
    # and there is one already.
    with registry.transaction(write=True) as session:
        session.execute(
            text(
                "CREATE UNIQUE INDEX one_abandonment ON monitoring_events (model_id) "
                "WHERE kind = 'retrain.abandoned'"
            )
        )
    registry.monitoring.record_event("fraud", None, "retrain.abandoned", "earlier", {})
    time.sleep(0.3)
    with pytest.raises(ConflictError):
        registry.retraining.begin(
            "fraud", attempt="next", owner="m2", trigger="t", ttl_seconds=60, abandon=ABANDON
        )
    attempt = registry.retraining.get("fraud")
    assert attempt is not None
    assert (attempt.attempt, attempt.run_id, attempt.candidate) == ("dead", run_id, 2)
    assert registry.get_run(run_id).status == "running"
    assert [e.key for e in registry.monitoring.events("fraud")] == ["earlier"]
    # Once the event can be recorded, the takeover and its record land together.
    with registry.transaction(write=True) as session:
        session.execute(text("DROP INDEX one_abandonment"))
    begun = take_over(registry)
    assert [e.key for e in begun.abandoned] == ["retrain.abandoned:dead"]
    assert registry.get_run(run_id).status == "failed"


def test_a_promotion_rolled_back_by_hand_since_is_still_the_stale_attempts(
    registry: Registry,
) -> None:
    died(registry)
    registry.retraining.promote("fraud", "dead", 2, "production", expected=1, actor="by:dead")
    registry.promote("fraud:1", actor="alice")  # by hand, before the next attempt
    begun = take_over(registry)
    assert begun.abandoned[0].evidence == {"run_failed": True, "candidate": 2, "promoted": True}


def test_a_candidate_promoted_by_hand_was_not_promoted_by_the_stale_attempt(
    registry: Registry,
) -> None:
    died(registry, candidate=2)
    registry.promote("fraud:2", actor="alice")
    begun = take_over(registry)
    assert begun.abandoned[0].evidence == {"run_failed": True, "candidate": 2, "promoted": False}
    assert registry.get_version("fraud@production").version == 2  # left as alice put it


def test_promotion_needs_the_lock_and_the_version_it_was_judged_against(
    registry: Registry,
) -> None:
    registry.retraining.begin("fraud", attempt="a1", owner="m", trigger="t", ttl_seconds=60)
    with pytest.raises(ConflictError, match="is v1 now, not v3"):
        registry.retraining.promote("fraud", "a1", 2, "production", expected=3, actor="t")
    with pytest.raises(ConflictError, match="no longer holds"):
        registry.retraining.promote("fraud", "other", 2, "production", expected=1, actor="t")
    assert registry.get_version("fraud@production").version == 1
    registry.retraining.promote("fraud", "a1", 2, "production", expected=1, actor="retrain:a1")
    assert registry.get_version("fraud@production").version == 2
    # Done again (a restarted attempt): the alias moved, so the second one refuses.
    with pytest.raises(ConflictError, match="is v2 now, not v1"):
        registry.retraining.promote("fraud", "a1", 2, "production", expected=1, actor="t")


def test_two_monitors_beginning_at_once_get_one_attempt(registry: Registry) -> None:
    results: list[Begun] = []
    barrier = threading.Barrier(4)

    def race(n: int) -> None:
        barrier.wait(timeout=30)
        results.append(
            registry.retraining.begin(
                "fraud", attempt=f"a{n}", owner=f"m{n}", trigger="drift", ttl_seconds=60
            )
        )

    threads = [threading.Thread(target=race, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    started = [r for r in results if r.attempt is not None]
    assert len(started) == 1
    assert [r.refused for r in results if r.attempt is None] == [IN_FLIGHT] * 3


def opened(registry: Registry, attempt: str = "a1") -> None:
    """fraud:2 put in shadow by ``attempt``."""
    began = registry.retraining.begin(
        "fraud", attempt=attempt, owner="m", trigger="t", ttl_seconds=60
    )
    assert began.attempt is not None, began
    event = (2, "retrain.shadowing", f"retrain.shadowing:{attempt}", {"candidate": 2})
    recorded = registry.retraining.open_shadow("fraud", attempt, 2, actor="t", event=event)
    assert (recorded.version, recorded.kind, recorded.key) == event[:3]


def test_a_shadow_opens_with_its_attempt_finished_and_blocks_the_next(
    registry: Registry,
) -> None:
    opened(registry)
    # Finished in the shadow's own transaction: no later call can be lost to a kill.
    attempt = registry.retraining.get("fraud")
    assert attempt is not None
    assert attempt.finished_at is not None
    assert (attempt.outcome, attempt.cooled_at) == ("shadowing", None)
    refused = registry.retraining.begin(
        "fraud", attempt="a2", owner="m", trigger="t", ttl_seconds=60
    )
    assert (refused.attempt, refused.refused, refused.shadow) == (None, SHADOW, 2)
    assert registry.retraining.shadow("fraud") is not None


def test_a_shadow_does_not_replace_another_version_in_shadow(registry: Registry) -> None:
    registry.retraining.begin("fraud", attempt="a1", owner="m", trigger="t", ttl_seconds=60)
    registry.promote("fraud:1", "shadow", actor="alice")  # by hand, while a1 trained
    event = (2, "retrain.shadowing", "retrain.shadowing:a1", {})
    with pytest.raises(ConflictError, match="is v1, in shadow already"):
        registry.retraining.open_shadow("fraud", "a1", 2, actor="t", event=event)
    assert registry.get_version("fraud@shadow").version == 1
    assert registry.monitoring.events("fraud", kind="retrain.shadowing") == []


def test_the_same_version_in_shadow_twice_is_ended_twice(registry: Registry) -> None:
    ended = (2, "retrain.abandoned", "retrain.abandoned:shadow:v2", {})
    for _ in range(2):
        registry.promote("fraud:2", "shadow", actor="alice")
        closed, events = registry.retraining.close_shadow(
            "fraud", 2, promote_over=None, actor="t", events=[ended]
        )
        assert closed == "closed"
        assert [e.kind for e in events] == ["retrain.abandoned"]
    keys = [e.key for e in registry.monitoring.events("fraud", kind="retrain.abandoned")]
    assert len(set(keys)) == 2
    assert all(k.startswith("retrain.abandoned:shadow:v2:move:") for k in keys)


def test_two_judges_ending_one_shadow_at_once_end_it_once(registry: Registry) -> None:
    opened(registry)
    results: list[Closed] = []
    barrier = threading.Barrier(3)
    gated = (2, "retrain.gated", "retrain.gated:shadow:v2", {"won": True})
    promoted = (2, "model.promoted", "model.promoted:v2", {"to": 2})

    def judge() -> None:
        barrier.wait(timeout=30)
        closed, _ = registry.retraining.close_shadow(
            "fraud", 2, promote_over=1, actor="shadow:v2", events=[gated, promoted]
        )
        results.append(closed)

    threads = [threading.Thread(target=judge) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["closed", "gone", "gone"]
    assert registry.get_version("fraud@production").version == 2
    assert len(registry.monitoring.events("fraud", kind="model.promoted")) == 1
    attempt = registry.retraining.get("fraud")
    assert attempt is not None
    assert attempt.cooled_at is not None


def test_a_shadow_whose_production_moved_is_not_promoted(registry: Registry) -> None:
    opened(registry)
    registry.promote("fraud:2", actor="alice")  # production moved off v1 after the verdict
    promoted = (2, "model.promoted", "model.promoted:v2", {"to": 2})
    closed, events = registry.retraining.close_shadow(
        "fraud", 2, promote_over=1, actor="shadow:v2", events=[promoted]
    )
    assert (closed, events) == ("moved", [])
    assert registry.get_version("fraud@shadow").version == 2  # nothing changed
    assert registry.monitoring.events("fraud", kind="model.promoted") == []


def test_bad_arguments_are_refused_with_the_reason(registry: Registry) -> None:
    with pytest.raises(ModelNotFoundError):
        registry.retraining.begin("nope", attempt="a", owner="m", trigger="t", ttl_seconds=60)
    with pytest.raises(InvalidInputError, match="positive number of seconds"):
        registry.retraining.begin("fraud", attempt="a", owner="m", trigger="t", ttl_seconds=0)
    with pytest.raises(InvalidInputError, match="at most 32 characters"):
        registry.retraining.begin("fraud", attempt="a" * 33, owner="m", trigger="t", ttl_seconds=1)
    assert registry.retraining.get("fraud") is None

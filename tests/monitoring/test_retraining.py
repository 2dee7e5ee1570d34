"""The monitor's side of retraining: the ``retrain:`` rules, which evidence triggers a
retrain, and a monitor that runs the loop — drift → retrain → gate → promotion — for real."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from retraining import MODEL, RETRAIN, copy_of_production, serve_traffic
from shipyard.errors import InvalidInputError
from shipyard.monitoring.log import open_prediction_log
from shipyard.monitoring.metrics import MonitorMetrics
from shipyard.monitoring.monitor import CycleReport, Monitor, MonitorOptions
from shipyard.monitoring.retraining import (
    CURSOR,
    DEGRADED,
    DRIFT,
    SCHEDULE,
    RetrainOutcome,
    RetrainSpec,
    RetrainTasks,
    RetrainWatch,
    Trigger,
    seconds,
)
from shipyard.pipeline.retrain import PipelineRetrainer
from shipyard.registry import Registry
from shipyard.settings import Settings

from .conftest import Clock, Watched, register_watched


def rules(**section: object) -> dict[str, str]:
    return {"retrain": RetrainSpec.model_validate(section).to_tag()}


def test_durations_read_as_seconds() -> None:
    assert seconds("90s") == 90
    assert seconds("30m") == 1800
    assert seconds("6h") == 21600
    assert seconds("1.5d") == 129600
    assert seconds(42) == 42
    with pytest.raises(ValueError, match=r"not a duration; write a number of seconds or e\.g\."):
        seconds("6 hours")


def test_after_trigger_is_a_count_of_rows_zero_by_default() -> None:
    assert RetrainSpec().data.after_trigger == 0
    assert RetrainSpec.model_validate({"data": {"after_trigger": 300}}).data.after_trigger == 300
    with pytest.raises(ValueError, match="after_trigger"):
        RetrainSpec.model_validate({"data": {"after_trigger": -1}})


def test_the_section_round_trips_through_its_tag_with_the_event_names_as_keys() -> None:
    spec = RetrainSpec.model_validate(
        {
            "triggers": {"performance.degraded": False, "schedule": {"every": "6h"}},
            "cooldown": "30m",
        }
    )
    assert spec.triggers.performance is None
    assert spec.triggers.drift is True
    assert spec.triggers.schedule is not None
    assert spec.triggers.schedule.every == 21600
    assert spec.cooldown == 1800
    tag = spec.to_tag()
    assert '"drift.detected": true' in tag
    assert RetrainSpec.from_tags({"retrain": tag}) == spec
    assert RetrainSpec.from_tags({}) is None
    with pytest.raises(InvalidInputError, match="not a valid retrain section"):
        RetrainSpec.from_tags({"retrain": "{bad"})


def test_a_drift_event_of_production_triggers_and_the_cursor_waits_for_the_outcome(
    watched: Watched,
) -> None:
    registry = watched.registry
    registry.promote(f"{MODEL}:1")
    store = registry.monitoring
    store.record_event(MODEL, 1, DRIFT, "drift.detected:v1:1", {"share": 0.6})
    trigger, moved = RetrainWatch(registry).due(MODEL, store, watched.clock())
    assert trigger is not None
    assert (trigger.kind, trigger.key, trigger.version) == (DRIFT, "drift.detected:v1:1", 1)
    assert trigger.evidence == {"share": 0.6}
    assert moved is not None
    assert store.cursor(MODEL, CURSOR) is None  # moved by the monitor once dealt with


def test_events_of_other_versions_and_small_degradations_trigger_nothing(
    watched: Watched,
) -> None:
    registry = watched.registry
    register_watched(registry, tags=rules(triggers={"performance.degraded": {"margin": 0.2}}))
    registry.promote(f"{MODEL}:2")
    store = registry.monitoring
    store.record_event(MODEL, 1, DRIFT, "drift.detected:v1:1", {})  # not production
    degraded = {"metric": "average_precision", "live": 0.8, "offline": 0.9}
    store.record_event(MODEL, 2, DEGRADED, "performance.degraded:v2:1", degraded)  # 0.1 < 0.2
    watch = RetrainWatch(registry)
    assert watch.due(MODEL, store, watched.clock()) == (None, None)
    cursor = store.cursor(MODEL, CURSOR)
    assert cursor is not None  # considered: never again
    worse = {"metric": "average_precision", "live": 0.6, "offline": 0.9}
    store.record_event(MODEL, 2, DEGRADED, "performance.degraded:v2:2", worse)
    trigger, _ = watch.due(MODEL, store, watched.clock())
    assert trigger is not None
    assert trigger.key == "performance.degraded:v2:2"


def test_a_schedule_is_due_every_period_since_the_version_or_the_last_retrain(
    watched: Watched,
) -> None:
    registry = watched.registry
    register_watched(registry, tags=rules(triggers={"schedule": {"every": "1h"}}))
    registry.promote(f"{MODEL}:2")
    clock = Clock(registry.get_version(f"{MODEL}:2").created_at)
    watch = RetrainWatch(registry)
    clock.advance(1800)
    assert watch.due(MODEL, registry.monitoring, clock())[0] is None
    clock.advance(1801)
    trigger, moved = watch.due(MODEL, registry.monitoring, clock())
    assert trigger is not None
    assert trigger.kind == SCHEDULE
    assert moved is None
    begun = registry.retraining.begin(
        MODEL, attempt="a1", owner="t", trigger=trigger.key, ttl_seconds=60
    )
    assert begun.attempt is not None
    clock = Clock(begun.attempt.started_at + timedelta(seconds=1800))
    assert watch.due(MODEL, registry.monitoring, clock())[0] is None  # one started since
    clock.advance(1800)
    assert watch.due(MODEL, registry.monitoring, clock())[0] is not None


# -- the loop, for real -----------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Settings:
    """fraud v1 in production, trained with the retrain section, on SQLite."""
    return copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "trained-home")


def run_once(settings: Settings) -> tuple[Monitor, CycleReport]:
    log = open_prediction_log(settings)
    assert log is not None
    registry = Registry.open(settings)
    options = MonitorOptions(models=(MODEL,), window_rows=1000, owner="monitor-test")
    retrainer = PipelineRetrainer(registry, log, settings, owner=options.owner)
    monitor = Monitor(
        registry, log, settings, options, metrics=MonitorMetrics(), retrainer=retrainer
    )
    try:
        report = asyncio.run(monitor.run(once=True))
        assert report is not None
    finally:
        registry.close()
    return monitor, report


def test_concept_drift_is_detected_retrained_gated_and_promoted(trained: Settings) -> None:
    serve_traffic(trained, 4000, seed=21, drift="concept", strength=0.05)
    monitor, report = run_once(trained)
    outcome = report.retrains[MODEL]
    assert outcome.status == "promoted", outcome.reason
    with Registry.open(trained) as registry:
        assert registry.get_version(f"{MODEL}@production").version == 2
        events = registry.monitoring.events(MODEL)
        kinds = [e.kind for e in events]
        loop = ["retrain.triggered", "retrain.trained", "retrain.gated", "model.promoted"]
        assert kinds[-4:] == loop
        triggered = next(e for e in events if e.kind == "retrain.triggered").evidence
        assert triggered["trigger"]["kind"] == DEGRADED  # the concept drift moved no feature
        assert DEGRADED in kinds
        assert registry.monitoring.cursor(MODEL, CURSOR) is not None
    counted = monitor.metrics.registry.get_sample_value(
        "shipyard_monitor_events_total", {"model": MODEL, "kind": "model.promoted"}
    )
    assert counted == 1
    # Another pass: the evidence was dealt with, nothing retrains again.
    _, again = run_once(trained)
    assert again.retrains == {}


def test_a_control_run_without_drift_raises_no_retrain(trained: Settings) -> None:
    serve_traffic(trained, 4000, seed=22)
    _, report = run_once(trained)
    assert report.retrains == {}
    with Registry.open(trained) as registry:
        kinds = [e.kind for e in registry.monitoring.events(MODEL)]
        assert not [k for k in kinds if k.startswith(("retrain.", "model."))], kinds
        assert DRIFT not in kinds
        assert DEGRADED not in kinds
        assert registry.get_version(f"{MODEL}@production").version == 1
        assert len(registry.list_versions(MODEL)) == 1


def test_an_old_trigger_is_superseded_once_production_moved(trained: Settings) -> None:
    with Registry.open(trained) as registry:
        registry.monitoring.record_event(MODEL, 1, DRIFT, "drift.detected:v1:9", {})
    serve_traffic(trained, 100, seed=23)
    with Registry.open(trained) as registry:
        log = open_prediction_log(trained)
        assert log is not None
        retrainer = PipelineRetrainer(registry, log, trained, owner="t")
        from shipyard.monitoring.retraining import Trigger

        stale = Trigger(DRIFT, "drift.detected:v0:1", 0)
        outcome = retrainer.retrain(MODEL, stale)
        assert outcome.status == "skipped"
        assert "superseded: the evidence is about v0, production is fraud:1 now" in outcome.reason
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.outcome == "skipped"
        assert attempt.cooled_at is None  # a skip starts no cooldown
        assert registry.retraining.last_started(MODEL) is not None
        assert timedelta(0) <= attempt.expires_at - attempt.started_at


def test_a_monitor_killed_mid_retrain_is_abandoned_then_retrained_once(
    tmp_path: Path,
) -> None:
    """A real ``shipyard monitor`` process is SIGKILLed once its retrain's run has started;
    the next monitor finds the lock stale, abandons the attempt (its run fails, nothing it
    left is promoted) and retrains afresh: one promotion, no version without its run."""
    import subprocess
    import sys
    import time

    from sqlalchemy import select

    from retraining import spec_text, train_production
    from shipyard.registry.tables import AliasEventRow

    settings = Settings(
        home=tmp_path / "home",
        monitor_interval_seconds=0.2,
        monitor_lease_ttl_seconds=1.0,  # the killed monitor's lease on the model, too
        retrain_lock_ttl_seconds=1.0,
    )
    train_production(settings, tmp_path, rows=3000, text=spec_text(max_iter=300))
    serve_traffic(settings, 4000, seed=31, drift="concept", strength=0.05)
    command = [sys.executable, "-m", "shipyard", "monitor", "--no-broker", "--models", MODEL]
    env = settings.child_env() | {"OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    try:
        with Registry.open(settings) as registry:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and child.poll() is None:
                attempt = registry.retraining.get(MODEL)
                if attempt is not None and attempt.run_id is not None:
                    child.kill()  # SIGKILL: no clean-up of any kind
                    killed_at = attempt
                    break
                time.sleep(0.02)
    finally:
        child.kill()
        _, err = child.communicate(timeout=60)
    assert killed_at is not None, f"the monitor never started a retrain: {err.decode()[-2000:]}"
    with Registry.open(settings) as registry:
        assert registry.get_run(killed_at.run_id).status == "running"  # as the kill left it
        time.sleep(1.2)  # the killed monitor's leases (1 s, wall clock by design) run out
        attempt = registry.retraining.get(MODEL)
        assert attempt is not None
        assert attempt.attempt == killed_at.attempt
        assert attempt.finished_at is None
    _, report = run_once(settings)  # the next monitor
    with Registry.open(settings) as registry:
        events = registry.monitoring.events(MODEL)
        abandoned = [e for e in events if e.kind == "retrain.abandoned"]
        assert len(abandoned) == 1
        assert abandoned[0].evidence["attempt"] == killed_at.attempt
        assert abandoned[0].evidence["run"] == "marked failed"
        assert registry.get_run(killed_at.run_id).status == "failed"
        promoted = [e for e in events if e.kind == "model.promoted"]
        with registry.transaction() as session:
            moves = list(session.scalars(select(AliasEventRow.to_version)))
        # At most one promotion per version, each recorded once (v2 may be the killed
        # attempt's own candidate, if its promotion landed before the kill).
        assert len(moves) == len(set(moves))
        assert sorted(e.version for e in promoted) == sorted(moves[1:])
        assert report.retrains[MODEL].status == "promoted", report.retrains
        production = registry.get_version(f"{MODEL}@production")
        for version in registry.list_versions(MODEL):  # no version without a finished run
            assert version.run_id is not None
            assert registry.get_run(version.run_id).status == "succeeded"
        assert production.version == moves[-1]


def test_an_invalid_retrain_tag_is_counted_and_monitoring_goes_on(watched: Watched) -> None:
    registry, settings = watched.registry, watched.settings
    register_watched(registry, tags={"retrain": "{not json"})
    registry.promote(f"{MODEL}:2")
    watched.predict(50, version=2)
    options = MonitorOptions(models=(MODEL,), window_rows=1000, owner="monitor-test")
    retrainer = PipelineRetrainer(registry, watched.log, settings, owner=options.owner)
    monitor = Monitor(
        registry,
        watched.log,
        settings,
        options,
        metrics=MonitorMetrics(),
        retrainer=retrainer,
        clock=watched.clock,
    )
    for _ in range(2):  # no back-off: the second cycle monitors the model again
        report = asyncio.run(monitor.run(once=True))
        assert report is not None
        assert report.errors == {}
        assert MODEL in report.owned
        assert MODEL in report.results
        assert MODEL not in monitor.failures
    assert report.retrains == {}
    counted = monitor.metrics.registry.get_sample_value(
        "shipyard_monitor_errors_total", {"model": MODEL, "error": "InvalidInputError"}
    )
    assert counted == 2


def test_too_few_rows_keep_the_trigger_until_enough_labels_came(trained: Settings) -> None:
    serve_traffic(trained, 300, seed=23)
    with Registry.open(trained) as registry:
        registry.monitoring.record_event(MODEL, 1, DRIFT, "drift.detected:v1:test", {})
    _, report = run_once(trained)
    assert report.retrains[MODEL].status == "waiting"
    with Registry.open(trained) as registry:
        assert registry.monitoring.cursor(MODEL, CURSOR) is None  # the evidence still counts
    _, again = run_once(trained)  # still too few: asked again, told once
    assert again.retrains[MODEL].status == "waiting"
    assert again.retrains[MODEL].events == []
    serve_traffic(trained, 1000, seed=24, prefix="u")
    _, later = run_once(trained)
    assert later.retrains[MODEL].status in ("promoted", "lost"), later.retrains[MODEL].reason
    with Registry.open(trained) as registry:
        [triggered] = registry.monitoring.events(MODEL, kind="retrain.triggered")
        # The waiting drift evidence, or newer evidence of this pass standing for it.
        key = triggered.evidence["trigger"]["key"]
        assert key == "drift.detected:v1:test" or key.startswith(("drift.", "performance."))
        skipped = registry.monitoring.events(MODEL, kind="retrain.skipped")
        assert [e.key for e in skipped] == ["retrain.skipped:drift.detected:v1:test:too-few-rows"]
        assert registry.monitoring.cursor(MODEL, CURSOR) is not None


def test_drain_says_a_retrain_still_running_goes_on(
    watched: Watched, caplog: pytest.LogCaptureFixture
) -> None:
    """A retrain thread cannot be stopped: drain's message says it keeps going."""
    release = threading.Event()

    class Slow:
        def retrain(self, model: str, trigger: Trigger) -> RetrainOutcome:
            assert release.wait(60), "the test never released the retrain"
            return RetrainOutcome(model, "lost", "released")

        def follow_shadow(self, model: str) -> RetrainOutcome | None:
            return None

    registry = watched.registry
    registry.promote(f"{MODEL}:1")
    registry.monitoring.record_event(MODEL, 1, DRIFT, "drift.detected:v1:1", {})
    tasks = RetrainTasks(registry, Slow())

    async def scenario() -> None:
        assert await tasks.consider(MODEL, registry.monitoring, watched.clock())
        with caplog.at_level(logging.WARNING, logger="shipyard.monitoring.retraining"):
            await tasks.drain(0.01)  # the retrain waits for `release`: still running
        assert MODEL in tasks.running
        release.set()
        await tasks.drain()
        assert tasks.take_outcomes()[MODEL].status == "lost"

    asyncio.run(scenario())
    [message] = [r.getMessage() for r in caplog.records if "still runs" in r.getMessage()]
    assert "goes on training and renewing its lock" in message
    assert "will expire" not in message


def test_a_monitor_runs_a_shadow_to_its_promotion_across_restarts(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """gate.shadow: the first pass retrains and leaves the winner in shadow; a later pass
    (a new monitor: the state is in the registry) judges it on labelled live requests."""
    shadowed = RETRAIN.replace("holdout: 0.3}", "holdout: 0.3, shadow: 200}")
    settings = copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "home", shadowed)
    serve_traffic(settings, 4000, seed=21, drift="concept", strength=0.05)
    _, first = run_once(settings)
    assert first.retrains[MODEL].status == "shadowing", first.retrains[MODEL].reason
    _, waiting = run_once(settings)  # no labels yet: nothing decided, nothing retrained
    assert waiting.retrains == {}
    serve_traffic(settings, 300, seed=41, drift="concept", shadow=2, truth="shadow")
    monitor, judged = run_once(settings)
    outcome = judged.retrains[MODEL]
    assert outcome.status == "promoted", outcome.reason
    with Registry.open(settings) as registry:
        assert registry.get_version(f"{MODEL}@production").version == 2
        assert [v.version for v in registry.list_versions(MODEL)] == [1, 2]  # one retrain
        kinds = [e.kind for e in registry.monitoring.events(MODEL)]
        assert kinds.count("retrain.triggered") == 1
        assert kinds[-2:] == ["retrain.gated", "model.promoted"]
    counted = monitor.metrics.registry.get_sample_value(
        "shipyard_monitor_events_total", {"model": MODEL, "kind": "model.promoted"}
    )
    assert counted == 1


def test_no_retrain_starts_while_a_shadow_is_open(watched: Watched) -> None:
    """RetrainTasks asks the retrainer about a shadow first; its triggers wait meanwhile."""
    verdicts = [RetrainOutcome(MODEL, "shadowing", "open", 2), None]
    retrained: list[str] = []

    class Shadowing:
        def retrain(self, model: str, trigger: Trigger) -> RetrainOutcome:
            retrained.append(trigger.key)
            return RetrainOutcome(model, "lost", "ran")

        def follow_shadow(self, model: str) -> RetrainOutcome | None:
            return verdicts.pop(0) if verdicts else None

    registry = watched.registry
    registry.promote(f"{MODEL}:1")
    registry.monitoring.record_event(MODEL, 1, DRIFT, "drift.detected:v1:1", {})
    tasks = RetrainTasks(registry, Shadowing())

    async def scenario() -> None:
        assert not await tasks.consider(MODEL, registry.monitoring, watched.clock())
        assert tasks.take_outcomes() == {}  # still shadowing: no outcome to report
        assert retrained == []
        assert await tasks.consider(MODEL, registry.monitoring, watched.clock())
        await tasks.drain()

    asyncio.run(scenario())
    assert retrained == ["drift.detected:v1:1"]  # the trigger waited, unconsumed

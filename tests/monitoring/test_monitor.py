"""The monitor process: leases, the broker's feedback and events queues, Prometheus metrics,
and a real ``shipyard monitor`` killed with SIGKILL and replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shipyard.errors import (
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from shipyard.messaging import open_broker
from shipyard.monitoring.monitor import (
    Monitor,
    MonitorOptions,
    check_log,
    events_queue,
    feedback_queue,
)
from shipyard.settings import Settings

from .conftest import MODEL, Watched


def monitor(watched: Watched, owner: str, **options: Any) -> Monitor:
    settings = watched.settings.model_copy(
        update={"monitor_lease_ttl_seconds": 0.5, "feedback_grace_seconds": 0.0}
    )
    return Monitor(
        watched.registry,
        watched.log,
        settings,
        MonitorOptions(owner=owner, window_rows=500, **options),
        clock=watched.clock,
    )


def test_one_monitor_owns_a_model_and_another_takes_over_when_its_lease_expires(
    watched: Watched,
) -> None:
    first, second = monitor(watched, "first"), monitor(watched, "second")
    assert asyncio.run(first.cycle()).owned == [MODEL]
    assert asyncio.run(second.cycle()).owned == []
    lease = watched.registry.monitoring.lease(MODEL)
    assert lease is not None
    assert lease[0] == "first"
    # "first" stops renewing (it hangs or died): once the lease expires "second" has it.
    for _ in range(100):
        if asyncio.run(second.cycle()).owned:
            break
        time.sleep(0.05)
    assert MODEL in second.trackers
    assert asyncio.run(first.cycle()).owned == []
    assert first.trackers == {}  # and it let go of its state
    second.release()
    assert watched.registry.monitoring.lease(MODEL) is None


def test_feedback_from_the_queue_is_stored_and_events_are_published(watched: Watched) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    ids = watched.predict(500, shift=1.5)
    runner = monitor(watched, "m", broker_url=url)

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        broker = open_broker(url)
        try:
            from shipyard.messaging import QueueSpec

            await broker.declare(QueueSpec(feedback_queue(MODEL)))
            bodies = [orjson.dumps({"id": pid, "label": 1}) for pid in ids[:10]]
            bodies += [b"not json", orjson.dumps({"id": ids[10], "label": "maybe"})]
            bodies.append(orjson.dumps([{"id": pid, "label": 0} for pid in ids[11:20]]))
            await broker.publish(feedback_queue(MODEL), bodies)
            runner._broker = open_broker(url)
            report = await runner.cycle()
            assert report.queued_feedback == {MODEL: 19}
            await runner.cycle()  # the labels stored in the first cycle are joined
            events = await broker.consume(events_queue(MODEL), 10, 100)
            dead = await broker.consume(f"{feedback_queue(MODEL)}.dead", 10, 100)
            return [e.body for e in events], [d.body for d in dead]
        finally:
            await broker.close()
            await runner._broker.close() if runner._broker else None

    events, dead = asyncio.run(scenario())
    assert [orjson.loads(e)["kind"] for e in events] == ["drift.detected"]
    reasons = sorted(orjson.loads(d)["reason"] for d in dead)
    assert len(reasons) == 2
    assert any("not JSON" in reason for reason in reasons)
    assert any(ids[10] in reason for reason in reasons)  # the bad label names its id
    assert watched.registry.monitoring.feedback_counts(MODEL)["joined"] == 19


class _DownBroker:
    """A broker that takes no message: every call fails as an unreachable one does."""

    async def declare(self, spec: Any) -> None:
        raise UnavailableError("broker down")

    async def consume(self, *args: Any) -> list[Any]:
        raise UnavailableError("broker down")

    async def close(self) -> None:
        return None


def test_an_event_a_failed_publish_did_not_send_is_sent_next_cycle(watched: Watched) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    watched.predict(500, shift=1.5)
    runner = monitor(watched, "m")
    runner._broker = _DownBroker()  # type: ignore[assignment]
    report = asyncio.run(runner.cycle())
    assert report.publish_failures == 1
    assert [e.kind for e in watched.registry.monitoring.events(MODEL)] == ["drift.detected"]
    text = generate_latest(runner.metrics.registry).decode()
    assert 'shipyard_monitor_publish_failures_total{model="fraud"} 1.0' in text

    async def back_up() -> tuple[int, list[bytes]]:
        runner._broker = open_broker(url)
        again = await runner.cycle()
        quiet = await runner.cycle()  # nothing new: nothing sent twice
        assert quiet.published == 0
        events = await runner._broker.consume(events_queue(MODEL), 10, 100)
        await runner.disconnect()
        return again.published, [e.body for e in events]

    published, bodies = asyncio.run(back_up())
    assert published == 1
    assert [orjson.loads(b)["kind"] for b in bodies] == ["drift.detected"]
    assert watched.registry.monitoring.cursor(MODEL, "events") == {
        "id": watched.registry.monitoring.events(MODEL)[0].id
    }


def test_a_new_owner_publishes_what_a_dead_monitor_did_not(watched: Watched) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    watched.predict(500, shift=1.5)
    dead = monitor(watched, "dead")  # recorded the event, died before publishing it
    asyncio.run(dead.cycle())
    assert watched.registry.monitoring.events(MODEL)
    heir = monitor(watched, "heir", broker_url=url)

    async def take_over() -> list[bytes]:
        await heir.connect()
        try:
            for _ in range(100):  # the dead monitor's lease expires
                if (await heir.cycle()).owned:
                    break
                await asyncio.sleep(0.05)
            assert heir._broker is not None
            events = await heir._broker.consume(events_queue(MODEL), 10, 100)
            return [e.body for e in events]
        finally:
            await heir.disconnect()

    assert [orjson.loads(b)["kind"] for b in asyncio.run(take_over())] == ["drift.detected"]


def test_one_failing_model_stops_no_other(watched: Watched) -> None:
    from .conftest import register_watched

    register_watched(watched.registry, name="bad", tags={"monitoring": "{not json"})
    watched.predict(500, shift=1.5)
    bad = Watched(watched.registry, watched.log, watched.clock, watched.settings, model="bad")
    bad.predict(10)
    runner = monitor(watched, "m")
    report = asyncio.run(runner.cycle())
    assert report.owned == ["bad", MODEL] or sorted(report.owned) == ["bad", MODEL]
    assert set(report.errors) == {"bad"}
    assert isinstance(report.errors["bad"], InvalidInputError)
    assert MODEL in report.results  # the good model was judged all the same
    assert [e.kind for e in watched.registry.monitoring.events(MODEL)] == ["drift.detected"]
    assert runner.failures["bad"].failures == 1
    text = generate_latest(runner.metrics.registry).decode()
    assert 'shipyard_monitor_errors_total{error="InvalidInputError",model="bad"} 1.0' in text
    status = watched.registry.monitoring.cursor("bad", "monitor")
    assert status is not None
    assert "InvalidInputError" in status["error"]["error"]
    # The bad model backs off: the next cycle skips it, the good one goes on.
    again = asyncio.run(runner.cycle())
    assert again.waiting == ["bad"]
    assert MODEL in again.results
    from shipyard.monitoring.report import monitoring_report

    assert (
        "InvalidInputError"
        in monitoring_report(watched.registry, "bad")["monitor"]["error"]["error"]
    )


def test_an_unexpected_error_is_the_model_s_and_it_recovers(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.monitoring.tracker import ModelTracker

    watched.predict(500)
    runner = monitor(watched, "m")
    real = ModelTracker.update
    calls = {"n": 0}

    def flaky(self: ModelTracker) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ZeroDivisionError("a bug")
        return real(self)

    monkeypatch.setattr(ModelTracker, "update", flaky)
    report = asyncio.run(runner.cycle())
    assert isinstance(report.errors[MODEL], ZeroDivisionError)
    runner.failures[MODEL].retry_at = 0.0  # its back-off is over
    report = asyncio.run(runner.cycle())
    assert report.errors == {}
    assert MODEL in report.results
    assert MODEL not in runner.failures
    status = watched.registry.monitoring.cursor(MODEL, "monitor")
    assert status is not None
    assert status["error"] is None


def test_feedback_for_a_model_without_a_label_schema_is_dead_lettered(
    watched: Watched,
) -> None:
    from .conftest import OFFLINE

    watched.registry.register_version(
        "nolabels",
        files={"model.onnx": b"x"},
        format="onnx",
        input_schema={"features": ["f0"]},
        output_schema={"outputs": [{"name": "score", "dtype": "float32"}]},
        metrics=OFFLINE,
    )
    url = f"memory://{uuid.uuid4().hex}"
    runner = monitor(watched, "m", broker_url=url)

    async def scenario() -> tuple[Any, list[bytes]]:
        from shipyard.messaging import QueueSpec

        broker = open_broker(url)
        await broker.declare(QueueSpec(feedback_queue("nolabels")))
        await broker.publish(feedback_queue("nolabels"), [b'{"id": "a", "label": 1}'])
        await runner.connect()
        try:
            report = await runner.cycle()
            dead = await broker.consume(f"{feedback_queue('nolabels')}.dead", 10, 100)
            return report, [d.body for d in dead]
        finally:
            await runner.disconnect()
            await broker.close()

    report, dead = asyncio.run(scenario())
    assert "nolabels" not in report.errors
    assert MODEL in report.results
    assert len(dead) == 1
    assert "names no task and classes" in orjson.loads(dead[0])["reason"]


def test_a_stalled_monitor_writes_nothing_once_its_lease_is_gone(watched: Watched) -> None:
    """Two monitors and a slow cycle: "first" stalls in its update past its lease, "second"
    takes the model over; first's late writes are refused and it lets the model go."""
    from shipyard.monitoring.tracker import ModelTracker

    watched.predict(500)
    first, second = monitor(watched, "first"), monitor(watched, "second")
    asyncio.run(first.cycle())
    store = watched.registry.monitoring
    cursor = store.cursor(MODEL, "log")
    tracker = first.trackers[MODEL]
    real = ModelTracker.update

    def slow(self: ModelTracker) -> Any:
        if self is tracker:  # stalls until the other monitor owns the model
            for _ in range(200):
                if asyncio.run(second.cycle()).owned:
                    break
                time.sleep(0.02)
        return real(self)

    watched.predict(100)
    tracker.update = slow.__get__(tracker)  # type: ignore[method-assign]
    first.renew = lambda: []  # type: ignore[method-assign]  # the whole process stalls
    report = asyncio.run(first.cycle())
    assert report.errors == {}
    assert MODEL not in first.trackers  # let go
    assert store.lease(MODEL) is not None
    assert store.lease(MODEL)[0] == "second"  # type: ignore[index]
    second_cursor = store.cursor(MODEL, "log")
    assert second_cursor != cursor  # second read the 100 new rows; first moved nothing back
    snapshot = store.snapshots(MODEL)[1]
    assert snapshot["rows_seen"] == 600


def test_leases_are_renewed_while_a_cycle_is_slow(watched: Watched) -> None:
    """A cycle longer than the lease's TTL (0.5 s) keeps the model: a task renews the lease
    every TTL/3 meanwhile, so the other monitor never gets it."""
    from shipyard.monitoring.tracker import ModelTracker

    watched.predict(100)
    first, second = monitor(watched, "first"), monitor(watched, "second")
    asyncio.run(first.cycle())
    tracker = first.trackers[MODEL]
    real = ModelTracker.update
    taken: list[list[str]] = []

    def slow(self: ModelTracker) -> Any:
        for _ in range(4):  # 1.2 s in all, over twice the TTL
            time.sleep(0.3)
            taken.append(asyncio.run(second.cycle()).owned)
        return real(self)

    watched.predict(100)
    tracker.update = slow.__get__(tracker)  # type: ignore[method-assign]
    report = asyncio.run(first.cycle())
    assert taken == [[], [], [], []]
    assert report.errors == {}
    assert report.results[MODEL].rows == 100
    assert MODEL in first.trackers
    # A lease another monitor took is found by the renewal and let go at the next cycle.
    watched.registry.monitoring.release_lease(MODEL, "first")
    assert watched.registry.monitoring.acquire_lease(MODEL, "other", 30)
    assert first.renew() == [MODEL]
    assert asyncio.run(first.cycle()).owned == []
    assert first.trackers == {}


def test_a_rebuild_longer_than_the_lease_keeps_the_model(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first cycle whose rebuild outlasts the lease's TTL (0.5 s): the lease is renewed
    meanwhile, the other monitor never gets the model, the cycle reports its rows."""
    from shipyard.monitoring.tracker import ModelTracker

    watched.predict(100)
    first, second = monitor(watched, "first"), monitor(watched, "second")
    real = ModelTracker.rebuild
    taken: list[list[str]] = []

    def slow(self: ModelTracker) -> None:
        real(self)
        if self.store.holder != "first":  # the second monitor's, had it got the model
            return
        for _ in range(4):  # 1.2 s in all, over twice the TTL
            time.sleep(0.3)
            taken.append(asyncio.run(second.cycle()).owned)

    monkeypatch.setattr(ModelTracker, "rebuild", slow)
    report = asyncio.run(first.cycle())
    assert taken == [[], [], [], []]
    assert report.errors == {}
    assert report.owned == [MODEL]
    assert report.results[MODEL].rows == 100
    assert watched.registry.monitoring.snapshots(MODEL)[1]["rows_seen"] == 100


def test_a_rebuild_that_fails_leaves_no_tracker(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.monitoring.tracker import ModelTracker

    def broken(self: ModelTracker) -> None:
        raise UnavailableError("the log is down")

    runner = monitor(watched, "first")
    monkeypatch.setattr(ModelTracker, "rebuild", broken)
    report = asyncio.run(runner.cycle())
    assert isinstance(report.errors[MODEL], UnavailableError)
    assert runner.trackers == {}


def test_a_cycle_the_database_refused_counts_its_labels_once(
    watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settling the statuses fails with a retryable error (SQLite's "database is locked"):
    nothing of the cycle is saved, the tracker is rebuilt, the labels are counted once."""
    from shipyard.registry import monitoring as store_module

    ids = watched.predict(20)
    runner = monitor(watched, "first")
    asyncio.run(runner.cycle())
    watched.label(ids[:5], ["1"] * 5)

    def locked(*args: Any) -> None:
        raise UnavailableError("database is locked")

    monkeypatch.setattr(store_module, "_settle", locked)
    report = asyncio.run(runner.cycle())
    assert isinstance(report.errors[MODEL], UnavailableError)
    assert MODEL not in runner.trackers
    monkeypatch.undo()
    runner.failures[MODEL].retry_at = 0.0  # no back-off
    for _ in range(2):
        report = asyncio.run(runner.cycle())
        assert report.errors == {}
        snapshot = watched.registry.monitoring.snapshots(MODEL)[1]
        assert snapshot["performance"]["all"]["labelled"] == 5
        assert snapshot["rows_seen"] == 20
    assert watched.registry.monitoring.feedback_counts(MODEL)["joined"] == 5


def test_prometheus_metrics_parse_and_carry_performance_and_drift(watched: Watched) -> None:
    ids = watched.predict(500, shift=1.5)
    watched.label(ids[:200], ["1"] * 200)
    runner = monitor(watched, "m")
    asyncio.run(runner.cycle())
    asyncio.run(runner.cycle())
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(runner.metrics.registry).decode())
    }
    performance = {
        (s.labels["metric"], s.labels["window"]): s.value
        for s in families["shipyard_model_performance"].samples
    }
    assert ("accuracy", "all") in performance
    assert ("accuracy", "rows") in performance
    drift = {
        s.labels["feature"]: s.value
        for s in families["shipyard_feature_drifted"].samples
        if s.labels["window"] == "rows"
    }
    assert drift == {"f0": 1.0, "f1": 1.0, "f2": 1.0, "f3": 1.0}
    assert families["shipyard_dataset_drift"].samples[0].value == 1.0
    feedback = {s.labels["result"]: s.value for s in families["shipyard_feedback"].samples}
    assert feedback["joined"] == 200
    assert families["shipyard_prediction_log_rows"].samples[0].value == 500
    events = families["shipyard_monitor_events"].samples
    assert [(s.labels["kind"], s.value) for s in events] == [("drift.detected", 1.0)]
    assert families["shipyard_monitor_lease"].samples[0].value == 1.0
    runner.release()
    text = generate_latest(runner.metrics.registry).decode()
    assert "shipyard_feature_drift{" not in text  # released: its series are gone


def test_an_unknown_model_is_named(watched: Watched) -> None:
    runner = monitor(watched, "m", models=("fraud", "nope"))
    with pytest.raises(NotFoundError, match="nope"):
        asyncio.run(runner.cycle())


def test_logging_off_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="prediction log is off"):
        check_log(None)


# -- a real process, killed -------------------------------------------------------------


def _start(home: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = Settings(
        home=home, monitor_interval_seconds=0.2, monitor_lease_ttl_seconds=1.0
    ).child_env()
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "shipyard", "monitor", "--models", MODEL, "--no-broker", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_a_monitor_killed_and_replaced_raises_no_event_twice(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    from shipyard.monitoring.log import ParquetLog
    from shipyard.registry import Registry

    from .conftest import Clock, register_watched

    home = sqlite_settings.home
    with Registry.open(sqlite_settings) as registry:
        register_watched(registry)
        watched = Watched(
            registry, ParquetLog(sqlite_settings.prediction_log_path), Clock(), sqlite_settings
        )
        watched.predict(500, shift=1.5)
        log = tmp_path / "monitor.log"
        first = _start(home, log, "--window-rows", "500")
        try:
            for _ in range(300):  # up to ~60 s on a busy machine
                if registry.monitoring.events(MODEL):
                    break
                assert first.poll() is None, log.read_text()
                time.sleep(0.2)
            assert [e.kind for e in registry.monitoring.events(MODEL)] == ["drift.detected"]
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(30)
        killed_at = datetime.now(UTC)
        lease = registry.monitoring.lease(MODEL)
        assert lease is not None  # SIGKILL released nothing
        # A new monitor takes the model over once the dead one's lease expires, rebuilds
        # the same windows from the log and raises nothing again.
        for _ in range(100):
            once = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "shipyard",
                    "monitor",
                    "--models",
                    MODEL,
                    "--once",
                    "--no-broker",
                    "--window-rows",
                    "500",
                ],
                env=Settings(home=home, monitor_lease_ttl_seconds=1.0).child_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert once.returncode == 0, once.stderr
            if "new predictions" in once.stdout:
                break
            time.sleep(0.3)
        assert "events: none" in once.stdout, once.stdout
        events = registry.monitoring.events(MODEL)
        assert [e.kind for e in events] == ["drift.detected"]
        assert len({e.key for e in events}) == len(events)
        assert registry.monitoring.lease(MODEL) is None  # --once released it
        # The replacement rebuilt the windows from the log: its snapshot (saved by --once,
        # after the takeover) holds the 500 rows and still sees the drift.
        [snapshot] = registry.monitoring.snapshots(MODEL).values()
        status = registry.monitoring.cursor(MODEL, "monitor")
        assert status is None or status["error"] is None
        assert datetime.fromisoformat(snapshot["updated_at"]) > killed_at
        assert snapshot["windows"]["rows"]["rows"] == 500
        assert snapshot["dataset_drift"]["rows"] is True
        assert snapshot["episodes"]["drift"] is True


def test_a_feedback_message_over_max_feedback_items_is_dead_lettered(watched: Watched) -> None:
    """One message holding more labels than ``max_feedback_items`` is refused naming the
    limit; the others are stored, in transactions of at most that many labels."""
    url = f"memory://{uuid.uuid4().hex}"
    ids = watched.predict(30)
    runner = monitor(watched, "m", broker_url=url)
    runner.settings = runner.settings.model_copy(update={"max_feedback_items": 4})
    stored: list[int] = []
    add_feedback = watched.registry.monitoring.add_feedback

    def counting(model: str, pairs: Any, **kwargs: Any) -> Any:
        stored.append(len(pairs))
        return add_feedback(model, pairs, **kwargs)

    watched.registry.monitoring.add_feedback = counting  # type: ignore[method-assign]

    async def scenario() -> tuple[Any, list[bytes]]:
        from shipyard.messaging import QueueSpec

        broker = open_broker(url)
        await broker.declare(QueueSpec(feedback_queue(MODEL)))
        bodies = [orjson.dumps([{"id": pid, "label": 1} for pid in ids[:5]])]  # too many
        bodies += [orjson.dumps([{"id": pid, "label": 0} for pid in ids[5:8]])]
        bodies += [orjson.dumps({"id": pid, "label": 1}) for pid in ids[8:11]]
        await broker.publish(feedback_queue(MODEL), bodies)
        await runner.connect()
        try:
            report = await runner.cycle()
            dead = await broker.consume(f"{feedback_queue(MODEL)}.dead", 10, 100)
            return report, [d.body for d in dead]
        finally:
            await runner.disconnect()
            await broker.close()

    report, dead = asyncio.run(scenario())
    assert report.queued_feedback == {MODEL: 6}
    (reason,) = [orjson.loads(d)["reason"] for d in dead]
    assert "5 feedback items in one batch; send at most 4" in reason
    assert max(stored) <= 4
    assert sum(stored) == 6


def test_history_older_than_its_retention_is_expired(watched: Watched) -> None:
    from datetime import timedelta

    from shipyard.registry import HistoryPoint

    watched.predict(10)
    mine = monitor(watched, "first", models=[MODEL])
    # A lease that outlasts a slow cycle on a busy machine: the expiry is written under it.
    mine.settings = mine.settings.model_copy(
        update={"monitor_history_days": 1.0, "monitor_lease_ttl_seconds": 60.0}
    )
    asyncio.run(mine.cycle())  # owns the model; its first cycle keeps a point
    old = datetime.now(UTC) - timedelta(days=2)
    mine.held.commit_cycle(
        MODEL, statuses={}, cursors={}, snapshots={}, history=[HistoryPoint(1, old, {"x": 1})]
    )
    assert len(watched.registry.monitoring.history(MODEL, 1)) == 2
    mine._expired_at = -float("inf")  # the cycle expired what there was: due again
    mine._housekeeping()
    [kept] = watched.registry.monitoring.history(MODEL, 1)
    assert kept.at > old
    mine.release()

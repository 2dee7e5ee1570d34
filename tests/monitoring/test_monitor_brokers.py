"""The monitor's broker paths on every broker the stream supports — labels in from
``<model>.feedback`` (bad ones dead-lettered), events out to ``<model>.events``, a broker
that dies under a running monitor, a model handed over to another monitor — and monitors
racing for a lease on each database."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from brokers import NatsProcess, RabbitMQProcess, RedisProcess, create_server, delete_queues
from shipyard.errors import UnavailableError
from shipyard.messaging import Broker, QueueSpec, open_broker
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.monitoring.monitor import CycleReport, Monitor, MonitorOptions
from shipyard.monitoring.monitor import events_queue as events_of
from shipyard.monitoring.monitor import feedback_queue as feedback_of
from shipyard.registry import Registry

from .conftest import Watched

#: Bounds of the loops that wait for a broker (counts, never a timed assertion).
ROUNDS = 60
CYCLE_LIMIT_S = 60.0


def make_monitor(
    watched: Watched,
    owner: str,
    *,
    registry: Registry | None = None,
    ttl_s: float = 0.5,
    broker_url: str | None = None,
) -> Monitor:
    settings = watched.settings.model_copy(
        update={"monitor_lease_ttl_seconds": ttl_s, "feedback_grace_seconds": 0.0}
    )
    return Monitor(
        registry or watched.registry,
        watched.log,
        settings,
        MonitorOptions(
            models=(watched.model,), owner=owner, window_rows=500, broker_url=broker_url
        ),
        clock=watched.clock,
    )


async def cycle(monitor: Monitor) -> CycleReport:
    """One cycle, bounded: a broker call that hangs fails the test instead of the run."""
    return await asyncio.wait_for(monitor.cycle(), CYCLE_LIMIT_S)


async def drain(broker: Broker, queue: str, expected: int) -> list[dict[str, Any]]:
    """Consume and ack until ``expected`` messages came or the rounds ran out."""
    await broker.declare(QueueSpec(queue))
    got: list[dict[str, Any]] = []
    for _ in range(ROUNDS):
        if len(got) >= expected:
            break
        deliveries = await broker.consume(queue, 100, 100)
        got += [orjson.loads(d.body) for d in deliveries]
        await broker.ack(queue, deliveries)
    return got


async def take_feedback(monitor: Monitor, expected: int) -> int:
    """Cycle until the monitor took ``expected`` labels from its queue (or rounds ran out)."""
    taken = 0
    for _ in range(ROUNDS):
        if taken >= expected:
            break
        report = await cycle(monitor)
        taken += sum(report.queued_feedback.values())
    return taken


def test_labels_come_in_bad_ones_are_dead_lettered_and_events_go_out(
    watched_on_sqlite: Watched, monitor_broker: str
) -> None:
    watched, url = watched_on_sqlite, monitor_broker
    scores = watched.rng.random(500)
    ids = watched.predict(500, shift=1.5, scores=scores)
    feedback, events = feedback_of(watched.model), events_of(watched.model)
    runner = make_monitor(watched, "m", broker_url=url)

    async def scenario() -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        client = open_broker(url)
        await runner.connect()
        try:
            await client.declare(QueueSpec(feedback))
            await client.declare(QueueSpec(events))  # a reader declares what it reads
            bodies = [orjson.dumps({"id": pid, "label": 1}) for pid in ids[:10]]
            bodies += [b"not json", orjson.dumps({"id": ids[10], "label": "maybe"})]
            bodies.append(orjson.dumps([{"id": pid, "label": 0} for pid in ids[11:20]]))
            await client.publish(feedback, bodies)
            taken = await take_feedback(runner, 19)
            await cycle(runner)  # the labels stored by the last cycle are joined
            dead = await drain(client, f"{feedback}.dead", 2)
            published = await drain(client, events, 1)
            return taken, dead, published
        finally:
            await client.close()
            await runner.disconnect()
            await delete_queues(url, [feedback, events])

    taken, dead, published = asyncio.run(scenario())
    assert taken == 19
    reasons = sorted(record["reason"] for record in dead)
    assert len(reasons) == 2, reasons
    assert any("not JSON" in reason for reason in reasons)
    assert any(ids[10] in reason for reason in reasons)  # the bad label names its id
    assert [(e["kind"], e["model"]) for e in published] == [("drift.detected", watched.model)]
    store = watched.registry.monitoring
    assert store.feedback_counts(watched.model)["joined"] == 19
    live = store.snapshots(watched.model)[1]["performance"]["all"]
    truth = np.array([1] * 10 + [0] * 9)
    predicted = (scores[[*range(10), *range(11, 20)]] >= 0.5).astype(int)
    assert live["labelled"] == 19
    assert live["metrics"]["accuracy"] == pytest.approx(float(np.mean(truth == predicted)))


@dataclass
class Server:
    """A broker server the test may kill and start again on the same URL."""

    url: str
    kill: Callable[[], None]
    start: Callable[[], None]
    settle_s: float = 0.0


@pytest.fixture(params=["embedded", "nats", "rabbitmq", "redis"])
def private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A broker server of the test's own (the embedded one, or a private nats-server,
    RabbitMQ node or redis-server): killing it harms no other test."""
    with ExitStack() as stack:
        if request.param == "embedded":
            embedded = EmbeddedNats(tmp_path / "embedded-home")
            stack.callback(embedded.stop)

            def start() -> None:
                embedded.start()  # on the port it had, free again

            start()
            yield Server(embedded.start(), embedded.stop, start)
            return
        kinds = {"nats": NatsProcess, "rabbitmq": RabbitMQProcess, "redis": RedisProcess}
        server = create_server(kinds[request.param], tmp_path / request.param)
        stack.enter_context(server)
        yield Server(server.url, server.kill, server.start, server.queue_settle_seconds)


def test_a_broker_that_dies_costs_published_events_not_the_database(
    watched_on_sqlite: Watched, private_broker: Server, caplog: pytest.LogCaptureFixture
) -> None:
    watched, server = watched_on_sqlite, private_broker
    feedback = feedback_of(watched.model)
    runner = make_monitor(watched, "m", broker_url=server.url)

    async def scenario() -> tuple[CycleReport, CycleReport, int]:
        await runner.connect()
        try:
            await cycle(runner)  # connected, the feedback queue declared
            await asyncio.sleep(server.settle_s)
            server.kill()
            ids = watched.predict(500, shift=1.5)
            with caplog.at_level(logging.WARNING, logger="shipyard.monitoring.monitor"):
                down = await cycle(runner)
            # It keeps going without the broker: labels sent over HTTP are still joined.
            watched.label(ids[:50], ["1"] * 50)
            still = await cycle(runner)
            # The broker comes back: the labels queued meanwhile are taken in.
            server.start()
            client = open_broker(server.url)
            try:
                await client.declare(QueueSpec(feedback))
                labels = [{"id": pid, "label": 0} for pid in ids[50:60]]
                await client.publish(feedback, [orjson.dumps(labels)])
            finally:
                await client.close()
            taken = await take_feedback(runner, 10)
            # The event the dead broker did not take went out once it was back (the outbox).
            if not runner.store.cursor(watched.model, "events"):
                await cycle(runner)
            client = open_broker(server.url)
            try:
                sent = await drain(client, events_of(watched.model), 1)
            finally:
                await client.close()
            return down, still, taken, sent
        finally:
            await runner.disconnect()

    down, still, taken, sent = asyncio.run(scenario())
    assert down.owned == [watched.model]
    assert down.publish_failures == 1
    assert still.publish_failures == 1  # tried again each cycle while the broker was down
    assert [e.kind for e in watched.registry.monitoring.events(watched.model)] == ["drift.detected"]
    assert [e["kind"] for e in sent] == ["drift.detected"]
    failures = runner.metrics.registry.get_sample_value(
        "shipyard_monitor_publish_failures_total", {"model": watched.model}
    )
    assert failures is not None
    assert failures >= 2  # each cycle tried again while the broker was away
    logged = [r.getMessage() for r in caplog.records if r.name == "shipyard.monitoring.monitor"]
    assert any("could not publish 1 event(s)" in m for m in logged), logged
    assert still.results[watched.model].feedback == {"joined": 50}
    assert taken == 10
    assert watched.registry.monitoring.feedback_counts(watched.model)["joined"] == 60


def test_the_monitor_that_takes_a_model_over_gets_its_labels(
    watched_on_sqlite: Watched, monitor_broker: str
) -> None:
    watched, url = watched_on_sqlite, monitor_broker
    ids = watched.predict(100)
    feedback = feedback_of(watched.model)
    first = make_monitor(watched, "first", broker_url=url)
    # "second" holds the lease it takes however slow its cycles are on a busy machine.
    second = make_monitor(watched, "second", broker_url=url, ttl_s=300.0)

    async def scenario() -> tuple[int, int]:
        await first.connect()
        await second.connect()
        client = open_broker(url)
        try:
            assert (await cycle(first)).owned == [watched.model]  # it consumes the queue
            for _ in range(ROUNDS):  # "first" stops renewing; its lease expires
                if (await cycle(second)).owned:
                    break
                await asyncio.sleep(0.05)
            assert (await cycle(first)).owned == []  # it knows it lost the model
            await client.declare(QueueSpec(feedback))
            await client.publish(feedback, [orjson.dumps({"id": i, "label": 1}) for i in ids])
            taken = 0
            for _ in range(ROUNDS):
                if taken >= len(ids):
                    break
                await cycle(first)
                taken += sum((await cycle(second)).queued_feedback.values())
            return taken, await client.backlog(feedback) or 0
        finally:
            await client.close()
            await first.disconnect()
            await second.disconnect()
            await delete_queues(url, [feedback])

    taken, backlog = asyncio.run(scenario())
    assert (taken, backlog) == (len(ids), 0)


def test_one_of_racing_monitors_owns_the_model_on_each_database(watched: Watched) -> None:
    """Monitors in separate registries (connection pools), as separate processes have."""
    watched.predict(500, shift=1.5)
    with ExitStack() as stack:
        registries = [stack.enter_context(Registry.open(watched.settings)) for _ in range(4)]
        # A lease outlives the test: it changes hands only when its holder lets go.
        runners = [
            make_monitor(watched, f"m{i}", registry=registry, ttl_s=300.0)
            for i, registry in enumerate(registries)
        ]

        async def race() -> list[str]:
            reports = await asyncio.gather(*(cycle(runner) for runner in runners))
            return [
                runner.options.owner for runner, r in zip(runners, reports, strict=True) if r.owned
            ]

        for _ in range(3):
            owners = asyncio.run(race())
            assert len(owners) == 1, owners
            lease = watched.registry.monitoring.lease(watched.model)
            assert lease is not None
            assert lease[0] == owners[0]
            assert asyncio.run(race()) == owners  # renewed by its holder only
            winner = next(r for r in runners if r.options.owner == owners[0])
            winner.release()  # a clean exit: the others race for it again
    kinds = [e.kind for e in watched.registry.monitoring.events(watched.model)]
    assert kinds == ["drift.detected"]  # raised once, whoever owned the model


class _AckFails:
    """A memory broker that loses its connection between taking messages and settling them."""

    def __init__(self, url: str) -> None:
        self.inner = open_broker(url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ack(self, queue: str, deliveries: Any) -> None:
        raise UnavailableError("broker lost")

    async def reject(self, queue: str, delivery: Any, reason: str) -> None:
        raise UnavailableError("broker lost")


def test_a_broker_lost_before_the_ack_costs_no_label_and_stops_no_cycle(
    watched_on_sqlite: Watched, caplog: pytest.LogCaptureFixture
) -> None:
    watched = watched_on_sqlite
    url = f"memory://monitor-{uuid.uuid4().hex}"
    ids = watched.predict(500, shift=1.5)
    feedback = feedback_of(watched.model)
    runner = make_monitor(watched, "m")

    async def scenario() -> CycleReport:
        client = open_broker(url)
        runner._broker = _AckFails(url)  # type: ignore[assignment]
        try:
            await client.declare(QueueSpec(feedback))
            bodies = [orjson.dumps({"id": pid, "label": 1}) for pid in ids[:5]]
            await client.publish(feedback, [*bodies, b"not json"])
            return await cycle(runner)
        finally:
            await client.close()

    with caplog.at_level(logging.WARNING, logger="shipyard.monitoring.monitor"):
        report = asyncio.run(scenario())
    assert report.queued_feedback == {watched.model: 5}  # stored, though not acked
    assert report.results[watched.model].rows == 500  # the cycle went on
    assert [e.kind for e in report.results[watched.model].events] == ["drift.detected"]
    logged = [r.getMessage() for r in caplog.records if r.name == "shipyard.monitoring.monitor"]
    assert sum("could not settle messages of" in m for m in logged) == 2, logged

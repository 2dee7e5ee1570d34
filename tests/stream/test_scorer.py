"""The scorer over an in-process broker and a real registered model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from brokers import SHARED
from shipyard.errors import PredictionLogError, UnavailableError
from shipyard.inference import load_predictor
from shipyard.messaging import Delivery, QueueSpec, open_broker
from shipyard.messaging.memory import MemoryBroker
from shipyard.monitoring.log import ParquetLog
from shipyard.monitoring.recorder import PredictionRecorder
from shipyard.registry import Registry

from .conftest import FEATURES, MODEL, Rig, transaction

pytestmark = pytest.mark.anyio
Rigs = Callable[..., Awaitable[Rig]]


async def test_each_input_gets_one_result_naming_the_version(
    rigs: Rigs, stream_registry: Registry
) -> None:
    rig = await rigs()
    values = np.linspace(-2, 2, 50)
    await rig.publish([transaction(f"t{i}", float(v)) for i, v in enumerate(values)])
    await rig.start()
    results = await rig.collect("results", 50)
    await rig.stop()
    assert sorted(r["id"] for r in results) == sorted(f"t{i}" for i in range(50))
    predictor = load_predictor(stream_registry.load_artifact(f"{MODEL}:1"))
    expected = predictor.predict(np.repeat(values[:, None], 4, axis=1).astype(np.float32))
    by_id = {r["id"]: r for r in results}
    for i in range(50):
        result = by_id[f"t{i}"]
        assert result["model"] == MODEL
        assert result["version"] == 1
        assert result["score"] == pytest.approx(float(expected["probability"][i]), abs=1e-6)
        assert result["label"] == int(expected["label"][i])
        assert result["attempts"] == 1
        assert result["worker"] == "0"
        assert isinstance(result["latency_ms"], float)
        assert str(result["scored_at"]).endswith("Z")
    assert rig.scorer.stats.scored == 50
    assert await rig.client.consume("transactions", 10, 50) == []  # all acked


async def test_bad_messages_are_dead_lettered_with_reasons_and_the_rest_scored(
    rigs: Rigs,
) -> None:
    rig = await rigs()
    good = [transaction(f"ok{i}") for i in range(20)]
    bad = {
        b"not json at all": "not JSON",
        b"\xff\xfe": "not JSON",
        b"[1, 2]": "not a JSON object",
        orjson.dumps({n: 1.0 for n in FEATURES}): "no `id`",
        orjson.dumps({"id": 7, **{n: 1.0 for n in FEATURES}}): "`id` must be a non-empty string",
        orjson.dumps({"id": "m", "a": 1.0}): "missing feature(s): b, c, d",
        orjson.dumps({"id": "t", **{n: 1.0 for n in FEATURES}, "b": "1.0"}): "'b' must be a number",
        orjson.dumps({"id": "n", **{n: 1.0 for n in FEATURES}, "c": None}): "'c' is null",
        orjson.dumps({"id": "r", **{n: 1.0 for n in FEATURES}, "d": 1e300}): "float32 range",
        b'{"id": "i", "a": 1%s, "b": 1, "c": 1, "d": 1}' % (b"0" * 60): "float32 range",
        b'{"id": "inf", "a": 1e400, "b": 1, "c": 1, "d": 1}': "not JSON",
        orjson.dumps({"id": "b", **{n: 1.0 for n in FEATURES}, "a": True}): "must be a number",
    }
    mixed = good[:10] + list(bad) + good[10:]
    await rig.publish(mixed)
    await rig.start()
    results = await rig.collect("results", 20)
    dead = await rig.collect("transactions.dead", len(bad))
    await rig.stop()
    assert sorted(r["id"] for r in results) == sorted(f"ok{i}" for i in range(20))
    assert len(dead) == len(bad)
    for record in dead:
        body = (
            record["body"].encode() if "body" in record else b"\xff\xfe"  # type: ignore[union-attr]
        )
        assert bad[body] in str(record["reason"]), record
        assert record["attempts"] == 1
    assert sum(rig.scorer.stats.dead_lettered.values()) == len(bad)
    assert set(rig.scorer.stats.dead_lettered) == {"not_json", "bad_id", "bad_features"}


async def test_extra_fields_are_ignored_and_nullable_features_accept_null(rigs: Rigs) -> None:
    rig = await rigs()
    body = orjson.dumps({"id": "x", **{n: 0.1 for n in FEATURES}, "Class": 1, "note": "hi"})
    await rig.publish([body])
    await rig.start()
    (result,) = await rig.collect("results", 1)
    await rig.stop()
    assert result["id"] == "x"


async def test_a_message_past_the_delivery_bound_is_dead_lettered_unparsed(rigs: Rigs) -> None:
    rig = await rigs(max_deliveries=2)
    await rig.scorer.start()
    await rig.publish([transaction("poison"), transaction("fine")])
    for _ in range(2):  # two workers take it and die without acking
        doomed = rig.connect()
        taken = await doomed.consume("transactions", 10, 1000)
        assert transaction("poison") in {d.body for d in taken}
        await doomed.ack("transactions", [d for d in taken if d.body != transaction("poison")])
        await doomed.close()
    rig.run()
    dead = await rig.collect("transactions.dead", 1)
    await rig.stop()
    assert len(dead) == 1
    assert "delivered 3 times without being scored" in str(dead[0]["reason"])
    assert dead[0]["attempts"] == 3
    assert rig.scorer.stats.dead_lettered == {"overdelivered": 1}


async def test_a_full_results_queue_pauses_scoring_without_dropping_or_spinning(
    rigs: Rigs,
) -> None:
    rig = await rigs(batch_size=8, results_max_length=10)
    await rig.publish([transaction(f"t{i}") for i in range(60)])
    await rig.start()
    for _ in range(100):  # until the results queue is full (batches fit whole or not at all)
        if (await rig.client.backlog("results") or 0) > 10 - rig.config.batch_size:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)  # nobody reads results for a second
    stats = rig.scorer.stats
    assert 10 - rig.config.batch_size < (await rig.client.backlog("results") or 0) <= 10
    # Holding at most the batches in flight, it took no more work than it could finish.
    assert stats.consumed <= 10 + rig.config.in_flight * rig.config.batch_size
    assert await rig.client.backlog("transactions") >= 60 - stats.consumed
    waits = rig.scorer._backpressure._value.get()  # type: ignore[attr-defined]
    assert 0 < waits < 40, f"{waits} publish attempts in a second: it spins"
    results = await rig.collect("results", 60, rounds=400)
    await rig.stop()
    assert sorted(r["id"] for r in results) == sorted(f"t{i}" for i in range(60))


async def test_a_promoted_version_is_picked_up_without_stopping(
    rigs: Rigs, stream_registry: Registry
) -> None:
    rig = await rigs(batch_size=16)
    await rig.start()
    await rig.publish([transaction(f"before{i}") for i in range(20)])
    before = await rig.collect("results", 20)
    assert {r["version"] for r in before} == {1}
    stream_registry.promote(f"{MODEL}:2", "production")
    versions: set[object] = set()
    for round_ in range(100):  # bounded: the service re-resolves the alias every 0.1 s
        await rig.publish([transaction(f"after{round_}")])
        versions |= {r["version"] for r in await rig.collect("results", 1)}
        if 2 in versions:
            break
        await asyncio.sleep(0.05)
    await rig.publish([transaction("last", 1.5)])
    (last,) = await rig.collect("results", 1)
    await rig.stop()
    assert last["version"] == 2
    v2 = load_predictor(stream_registry.load_artifact(f"{MODEL}:2"))
    expected = v2.predict(np.full((1, 4), 1.5, dtype=np.float32))["probability"][0]
    assert last["score"] == pytest.approx(float(expected), abs=1e-6)


async def test_rows_the_model_fails_on_are_dead_lettered_and_their_batch_scored(
    rigs: Rigs, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await rigs(batch_size=32)
    await rig.scorer.start()
    loaded = await rig.scorer.service.model(MODEL)
    real = loaded.predictor.predict

    def fails_on_negative_a(features: np.ndarray) -> dict[str, np.ndarray]:
        if (features[:, 0] < -100).any():  # fault injection: the model breaks on these rows
            raise RuntimeError("tree walk failed")
        return real(features)

    monkeypatch.setattr(loaded.batcher, "_predict", fails_on_negative_a)
    bodies = [transaction(f"ok{i}") for i in range(10)]
    bodies.insert(4, transaction("boom", -1000.0))
    await rig.publish(bodies)
    rig.run()
    results = await rig.collect("results", 10)
    (dead,) = await rig.collect("transactions.dead", 1)
    await rig.stop()
    assert sorted(r["id"] for r in results) == sorted(f"ok{i}" for i in range(10))
    assert "the model failed on it: tree walk failed" in str(dead["reason"])
    assert rig.scorer.stats.dead_lettered == {"model_error": 1}


class FlakyBroker(MemoryBroker):
    """A memory broker whose first calls of each operation fail as if unreachable."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url, redelivery_ms=200)
        self.failures = {"publish": failures, "consume": failures, "ack": failures}

    def _fail(self, operation: str) -> None:
        if self.failures[operation] > 0:
            self.failures[operation] -= 1
            raise UnavailableError(f"{operation}: broker unreachable (injected)")

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        if queue == "results":
            self._fail("publish")
        await super().publish(queue, bodies)

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        self._fail("consume")
        return await super().consume(queue, max_messages, timeout_ms)

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        self._fail("ack")
        await super().ack(queue, deliveries)


async def test_broker_failures_are_retried_and_nothing_is_lost(rigs: Rigs) -> None:
    url = "memory://flaky"
    rig = await rigs(broker=FlakyBroker(url, failures=3), batch_size=10)
    rig.url, rig.client = url, open_broker(url, redelivery_ms=200)
    await rig.client.declare(QueueSpec("transactions"))
    await rig.publish([transaction(f"t{i}") for i in range(30)])
    await rig.start()
    results = await rig.collect("results", 30)
    await rig.stop()
    assert sorted(r["id"] for r in results) == sorted(f"t{i}" for i in range(30))
    assert rig.broker.failures == {"publish": 0, "consume": 0, "ack": 0}  # type: ignore[attr-defined]


async def test_stop_finishes_the_batches_in_flight(rigs: Rigs) -> None:
    rig = await rigs(batch_size=50)
    await rig.publish([transaction(f"t{i}") for i in range(50)])
    await rig.start()
    for _ in range(100):
        if rig.scorer.stats.consumed:
            break
        await asyncio.sleep(0.01)
    await rig.stop()  # right after the batch was taken
    assert rig.scorer.stats.scored == 50
    assert len(await rig.collect("results", 50)) == 50
    assert await rig.client.consume("transactions", 10, 300) == []  # acked, not redelivered


async def test_a_broker_down_at_stop_leaves_the_batch_for_redelivery(rigs: Rigs) -> None:
    url = "memory://down-at-stop"
    broker = FlakyBroker(url, failures=0)
    rig = await rigs(broker=broker, batch_size=5, stop_grace_s=0.3)
    rig.url, rig.client = url, open_broker(url, redelivery_ms=200)
    await rig.client.declare(QueueSpec("transactions"))
    await rig.start()
    broker.failures["publish"] = 10**6  # the broker goes away for good
    await rig.publish([transaction(f"t{i}") for i in range(5)])
    for _ in range(100):
        if rig.scorer.stats.consumed:
            break
        await asyncio.sleep(0.01)
    await rig.stop()  # gives up after the grace period instead of hanging
    await broker.close()  # the connection drops: its unacked messages go back
    again = await rig.client.consume("transactions", 10, 1000)
    assert sorted(d.body for d in again) == sorted(transaction(f"t{i}") for i in range(5))
    assert {d.attempts for d in again} == {2}


class BrokenBroker(MemoryBroker):
    """A memory broker whose acks fail with an error no backend should raise (a bug)."""

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        raise RuntimeError("bug in a client library")


async def test_an_unforeseen_failure_stops_the_scorer_and_leaves_the_batch_unacked(
    rigs: Rigs,
) -> None:
    url = "memory://broken"
    rig = await rigs(broker=BrokenBroker(url, redelivery_ms=200), batch_size=5)
    rig.url, rig.client = url, open_broker(url, redelivery_ms=200)
    await rig.client.declare(QueueSpec("transactions"))
    await rig.publish([transaction(f"t{i}") for i in range(5)])
    await rig.start()
    assert rig.task is not None
    with pytest.raises(RuntimeError, match="bug in a client library"):
        await asyncio.wait_for(rig.task, 30)
    assert rig.scorer.stopping
    await rig.broker.close()  # the worker exits: its unacked messages go back
    again = await rig.client.consume("transactions", 10, 1000)
    assert len(again) == 5
    assert {d.attempts for d in again} == {2}


class SwitchableLog:
    """A ParquetLog that fails every write while ``down``."""

    def __init__(self, root: Path) -> None:
        self.store = ParquetLog(root)
        self.down = False

    def write(self, batch: pa.Table) -> None:
        if self.down:
            raise PredictionLogError("the log's disk is gone")
        self.store.write(batch)

    def ids(self) -> list[str]:
        return [i for t in self.store.scan(MODEL).values() for i in t.column("id").to_pylist()]


async def test_scored_messages_are_logged_before_they_are_acked(rigs: Rigs, tmp_path: Path) -> None:
    rig = await rigs(batch_size=16)
    log = SwitchableLog(tmp_path)
    rig.scorer.recorder = PredictionRecorder(log, durable_flush_ms=20)  # type: ignore[arg-type]
    await rig.publish([transaction(f"t{i}", i / 40) for i in range(40)] + [b"not json"])
    await rig.start()
    results = await rig.collect("results", 40)
    await rig.stop()
    rig.scorer.recorder.close()
    assert len(results) == 40
    table = pa.concat_tables(log.store.scan(MODEL).values())
    assert sorted(table.column("id").to_pylist()) == sorted(f"t{i}" for i in range(40))
    assert set(table.column("source").to_pylist()) == {"stream"}
    by_id = {r["id"]: r for r in results}
    for row in table.to_pylist():
        assert row["score"] == pytest.approx(by_id[row["id"]]["score"])
        assert row["label"] == str(by_id[row["id"]]["label"])
        assert row["features"] == pytest.approx(dict.fromkeys(FEATURES, float(row["id"][1:]) / 40))
    assert await rig.client.consume("transactions", 10, 50) == []  # all acked


LOG_FAULT_BROKERS = {
    "redis": ("Redis", 6379),
    "rabbitmq": ("RabbitMQ", 5672),
    "nats": ("NATS", 4222),
}


@pytest.fixture(params=["memory", *sorted(LOG_FAULT_BROKERS)])
def log_fault_url(
    request: pytest.FixtureRequest, service: Callable[[str, int], None]
) -> str | None:
    """None (the memory broker) or a machine's shared broker (skipped when it is down)."""
    if request.param == "memory":
        return None
    request.applymarker(pytest.mark.integration)
    service(*LOG_FAULT_BROKERS[request.param])
    return SHARED[request.param][2]


async def test_an_unavailable_log_stops_the_acks_until_it_is_back_and_loses_nothing(
    rigs: Rigs, tmp_path: Path, log_fault_url: str | None
) -> None:
    tag = uuid.uuid4().hex[:8]
    rig = await rigs(
        url=log_fault_url, batch_size=8, queue=f"log-fault-{tag}", results=f"log-fault-{tag}-out"
    )
    log = SwitchableLog(tmp_path)
    log.down = True
    rig.scorer.recorder = PredictionRecorder(log, durable_flush_ms=10)  # type: ignore[arg-type]
    acked: list[str] = []
    ack = rig.broker.ack

    async def counting_ack(queue: str, deliveries: Sequence[Delivery]) -> None:
        acked.extend(orjson.loads(d.body)["id"] for d in deliveries)
        await ack(queue, deliveries)

    rig.broker.ack = counting_ack  # type: ignore[method-assign]
    await rig.publish([transaction(f"t{i}") for i in range(30)])
    await rig.start()
    for _ in range(50):  # bounded: until the scorer has tried to log
        if rig.scorer.stats.scored:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert rig.scorer.stats.scored
    assert acked == []
    assert log.ids() == []
    log.down = False
    for _ in range(200):
        if set(acked) >= {f"t{i}" for i in range(30)}:
            break
        await asyncio.sleep(0.05)
    await rig.stop()
    rig.scorer.recorder.close()
    assert set(acked) == {f"t{i}" for i in range(30)}
    assert set(log.ids()) == {f"t{i}" for i in range(30)}  # a redelivery may log twice

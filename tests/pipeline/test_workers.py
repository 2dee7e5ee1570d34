"""Stage workers on the in-process broker: a submitted run completes through them, with the
same outcome as in-process; redelivered, stray, poison and failing events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from shipyard.data import file_sha256, generate_fraud
from shipyard.messaging import open_broker
from shipyard.pipeline import Runner, parse_spec
from shipyard.pipeline.events import STAGE_NAMES, StageEvent, publish_event
from shipyard.pipeline.workers import WorkerConfig
from shipyard.registry import Registry
from shipyard.settings import Settings
from stage_runs import SMALL_SPEC, running_worker, submit, until_ended

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    with Registry.open(settings) as opened:
        yield opened


@pytest.fixture
def url() -> str:
    return f"memory://stages-{uuid.uuid4().hex}"


def config(**changes: object) -> WorkerConfig:
    options: dict[str, object] = {"prefix": "pipeline", "worker": "test:1", "poll_ms": 50}
    return WorkerConfig(**(options | changes))  # type: ignore[arg-type]


async def dead_letters(url: str, queue: str) -> list[dict[str, object]]:
    broker = open_broker(url)
    deliveries = await broker.consume(f"{queue}.dead", 10, 100)
    await broker.close()
    return [orjson.loads(delivery.body) for delivery in deliveries]


async def test_a_submitted_run_ends_as_the_same_run_in_process(
    registry: Registry, url: str
) -> None:
    broker = open_broker(url)
    run_id = await submit(registry, broker, "pipeline")
    assert (await asyncio.to_thread(registry.runs.get, run_id)).status == "queued"
    async with running_worker(url, registry, config()) as worker:
        run = await until_ended(registry, run_id)
    assert run.status == "succeeded", run.error
    assert [stage.name for stage in run.stages] == list(STAGE_NAMES)
    assert {(stage.status, stage.worker, stage.attempts) for stage in run.stages} == {
        ("succeeded", "test:1", 1)
    }
    assert run.stages[0].outputs is not None
    assert "frame" in run.stages[0].outputs
    # Validation changed nothing in the generated table: the same blob goes on, not a copy.
    assert run.stages[1].outputs is not None
    assert run.stages[1].outputs["frame"] == run.stages[0].outputs["frame"]
    assert worker.stats.succeeded == len(STAGE_NAMES)
    version = registry.versions_of_runs([run_id])[run_id]
    assert version.aliases == ["production"]  # promoted: no version had the alias
    registry.load_artifact(version.ref)  # signed and verifiable
    # The same spec in-process: the same data, the same metrics.
    local = Runner(registry).run(parse_spec(SMALL_SPEC), SMALL_SPEC)
    assert run.dataset_sha256 == local.dataset_sha256
    assert run.metrics == registry.runs.get(local.run_id).metrics
    assert version.metrics == local.version.metrics == local.metrics
    assert local.promotion.promoted is False  # equal, not better: as in-process
    await broker.close()


async def test_a_worker_goes_on_with_the_stages_it_runs_and_drains_their_events(
    registry: Registry, url: str
) -> None:
    """A worker that runs the next stage too claims it as it records the last one and goes
    on; every stage's event is still published, and taken off its queue once found done."""
    broker = open_broker(url)
    run_id = await submit(registry, broker, "pipeline")
    async with running_worker(url, registry, config()) as worker:
        run = await until_ended(registry, run_id)
        for _ in range(200):  # the published events of the stages it went on with
            if worker.stats.skipped == len(STAGE_NAMES) - 1:
                break
            await asyncio.sleep(0.05)
    assert run.status == "succeeded", run.error
    assert worker.stats.succeeded == len(STAGE_NAMES)
    assert worker.stats.skipped == len(STAGE_NAMES) - 1
    assert worker.stats.deferred == 0
    for stage in STAGE_NAMES:
        assert await broker.backlog(f"pipeline.{stage}") == 0, stage
    await broker.close()


async def test_a_submitted_data_file_goes_through_the_store(
    registry: Registry, url: str, tmp_path: Path
) -> None:
    table = tmp_path / "table.csv"
    generate_fraud(1500, seed=4).to_csv(table, index=False)
    text = SMALL_SPEC.replace("generate: {dataset: fraud, rows: 2000, seed: 7}", f"path: {table}")
    digest = file_sha256(table)
    broker = open_broker(url)
    run_id = await submit(registry, broker, "pipeline", text)
    table.unlink()  # the workers read the copy in the artifact store
    async with running_worker(url, registry, config()):
        run = await until_ended(registry, run_id)
    assert run.status == "succeeded", run.error
    assert run.dataset_sha256 == digest  # the file's digest, as in-process
    assert run.params["data"] == {"path": str(table)}
    await broker.close()


async def test_a_redelivered_event_is_skipped_and_a_lost_next_event_published_again(
    registry: Registry, url: str
) -> None:
    broker = open_broker(url)
    run_id = await submit(registry, broker, "pipeline")
    async with running_worker(url, registry, config(stages=("ingest",))) as worker:
        for _ in range(200):
            if worker.stats.succeeded:
                break
            await asyncio.sleep(0.05)
    # The validate event is lost; the ingest event comes again.
    lost = await broker.consume("pipeline.validate", 10, 1000)
    assert [StageEvent.parse(d.body).stage for d in lost] == ["validate"]
    await broker.ack("pipeline.validate", lost)
    outputs = registry.runs.get(run_id).stages[0].outputs
    assert outputs is not None
    await publish_event(broker, "pipeline", StageEvent(run_id, "ingest", {}))
    async with running_worker(url, registry, config()) as worker:
        run = await until_ended(registry, run_id)
    assert run.status == "succeeded", run.error
    assert worker.stats.skipped >= 1
    assert [stage.name for stage in run.stages] == list(STAGE_NAMES)  # ingest ran once
    await broker.close()


async def test_an_event_whose_stage_a_live_worker_holds_is_deferred(
    registry: Registry, url: str
) -> None:
    broker = open_broker(url)
    run_id = await submit(registry, broker, "pipeline")
    held = registry.runs.claim_stage(run_id, "ingest", "elsewhere:9", 600)
    # Held back until the holder's lease would lapse, at most one lease of this worker's.
    async with running_worker(url, registry, config(defer_s=0.01, lease_s=0.3)) as worker:
        for _ in range(200):
            if worker.stats.deferred >= 2:
                break
            await asyncio.sleep(0.05)
        assert worker.stats.deferred >= 2
        assert worker.stats.succeeded == 0
        [stage] = registry.runs.get(run_id).stages
        assert (stage.status, stage.worker) == ("running", "elsewhere:9")
        # The holder dies: its lease lapses, the deferred event takes the stage over.
        assert held.stage_id is not None
        registry.runs.release_stage(held.stage_id, "elsewhere:9")
        run = await until_ended(registry, run_id)
    assert run.status == "succeeded", run.error
    assert (run.stages[0].worker, run.stages[0].attempts) == ("test:1", 2)
    await broker.close()


async def test_events_that_do_not_parse_or_name_no_run_are_dead_lettered(
    registry: Registry, url: str
) -> None:
    broker = open_broker(url)
    await publish_event(broker, "pipeline", StageEvent("0" * 32, "ingest", {}))
    await broker.publish("pipeline.ingest", [b"not json", b'{"run": "x", "stage": "train"}'])
    async with running_worker(url, registry, config()) as worker:
        for _ in range(200):
            if worker.stats.dead_lettered == 3:
                break
            await asyncio.sleep(0.05)
    reasons = sorted(str(letter["reason"]) for letter in await dead_letters(url, "pipeline.ingest"))
    assert len(reasons) == 3
    assert "a stage event that is not JSON" in reasons[0]
    assert reasons[1] == "an event for stage 'train' on the queue of 'ingest'"
    assert reasons[2].startswith(f"run {'0' * 32} is not in this registry")
    await broker.close()


async def test_a_poison_event_is_dead_lettered_after_the_bound_and_fails_its_run(
    registry: Registry, url: str
) -> None:
    broker = open_broker(url, redelivery_ms=20)
    run_id = await submit(registry, broker, "pipeline")
    # Two workers took it and died without a word (no ack): it comes back each time.
    for _ in range(2):
        taken: list[object] = []
        for _ in range(100):
            taken = list(await broker.consume("pipeline.ingest", 1, 100))
            if taken:
                break
        assert taken
    async with running_worker(url, registry, config(max_deliveries=2), redelivery_ms=20):
        run = await until_ended(registry, run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("ingest: its event was dead-lettered: delivered 3 times, more")
    [letter] = await dead_letters(url, "pipeline.ingest")
    assert "SHIPYARD_STAGE_MAX_DELIVERIES" in str(letter["reason"])
    await broker.close()


async def test_a_failing_stage_fails_the_run_with_the_reason(
    registry: Registry, url: str, tmp_path: Path
) -> None:
    table = tmp_path / "one-class.csv"
    frame = generate_fraud(200, seed=4)
    frame["Class"] = 0
    frame.to_csv(table, index=False)
    text = SMALL_SPEC.replace("generate: {dataset: fraud, rows: 2000, seed: 7}", f"path: {table}")
    broker = open_broker(url)
    run_id = await submit(registry, broker, "pipeline", text)
    async with running_worker(url, registry, config()) as worker:
        run = await until_ended(registry, run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("validate: InvalidInputError: target")
    assert [(s.name, s.status) for s in run.stages] == [
        ("ingest", "succeeded"),
        ("validate", "failed"),
    ]
    assert worker.stats.failed == 1
    await broker.close()


def test_a_worker_refuses_unknown_stages() -> None:
    with pytest.raises(Exception, match="unknown stages trian; choose among ingest,"):
        WorkerConfig(stages=("trian",))

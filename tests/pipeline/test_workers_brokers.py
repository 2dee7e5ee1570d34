"""Stage workers over the real brokers (RabbitMQ, NATS, Redis on 127.0.0.1 and the embedded
NATS server), and a worker process killed with SIGKILL mid-stage."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokers import SHARED, delete_queues
from shipyard.children import Child
from shipyard.messaging import open_broker
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.pipeline.events import STAGE_NAMES
from shipyard.pipeline.workers import WorkerConfig
from shipyard.registry import Registry
from shipyard.settings import Settings
from stage_runs import SMALL_SPEC, running_worker, submit, until_ended

pytestmark = pytest.mark.anyio

PORTS = {"redis": ("Redis", 6379), "rabbitmq": ("RabbitMQ", 5672), "nats": ("NATS", 4222)}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry(sqlite_settings: Settings) -> Iterator[Registry]:
    with Registry.open(sqlite_settings) as opened:
        yield opened


@pytest.fixture
def prefix() -> str:
    return f"test-stages-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["rabbitmq", "nats", "redis", "embedded"])
def stage_broker(
    request: pytest.FixtureRequest, service: Callable[[str, int], None], home: Path
) -> Iterator[str]:
    if request.param == "embedded":
        with EmbeddedNats(home) as url:
            yield url
        return
    request.applymarker(pytest.mark.integration)
    service(*PORTS[request.param])
    yield SHARED[request.param][2]


async def test_a_run_goes_through_workers_on_each_broker(
    registry: Registry, stage_broker: str, prefix: str
) -> None:
    broker = open_broker(stage_broker)
    try:
        run_id = await submit(registry, broker, prefix)
        # Two workers: one for the first stages, one for the rest.
        first = WorkerConfig(stages=STAGE_NAMES[:3], prefix=prefix, worker="w:1", poll_ms=200)
        rest = WorkerConfig(stages=STAGE_NAMES[3:], prefix=prefix, worker="w:2", poll_ms=200)
        async with (
            running_worker(stage_broker, registry, first),
            running_worker(stage_broker, registry, rest),
        ):
            run = await until_ended(registry, run_id)
        assert run.status == "succeeded", run.error
        assert [(s.name, s.worker) for s in run.stages] == [
            (name, "w:1" if name in STAGE_NAMES[:3] else "w:2") for name in STAGE_NAMES
        ]
        assert registry.versions_of_runs([run_id])[run_id].aliases == ["production"]
    finally:
        await broker.close()
        await delete_queues(stage_broker, [f"{prefix}.{stage}" for stage in STAGE_NAMES])


SLOW_SPEC = SMALL_SPEC.replace("rows: 2000", "rows: 20000").replace(
    "type: HistGradientBoostingClassifier\n  params: {max_iter: 20}",
    "type: RandomForestClassifier\n  params: {n_estimators: 150, n_jobs: 1}",
)


def _worker(settings: Settings, url: str, prefix: str, name: str, log: Path) -> Child:
    env = settings.child_env() | {
        "SHIPYARD_STAGE_QUEUE_PREFIX": prefix,
        "SHIPYARD_STAGE_REDELIVERY_MS": "1000",
        "SHIPYARD_STAGE_LEASE_SECONDS": "2",
        "SHIPYARD_STAGE_DEFER_SECONDS": "0.2",
    }
    command = [sys.executable, "-m", "shipyard", "pipeline", "worker", "--broker", url]
    return Child([*command, "--name", name], env=env, log=log, name=name).start()


async def test_a_worker_killed_mid_stage_leaves_the_stage_to_another(
    sqlite_settings: Settings,
    registry: Registry,
    service: Callable[[str, int], None],
    prefix: str,
    tmp_path: Path,
) -> None:
    service("NATS", 4222)
    url = SHARED["nats"][2]
    broker = open_broker(url)
    doomed = _worker(sqlite_settings, url, prefix, "doomed", tmp_path / "doomed.log")
    survivor: Child | None = None
    try:
        run_id = await submit(registry, broker, prefix, SLOW_SPEC)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stages = (await asyncio.to_thread(registry.runs.get, run_id)).stages
            if any(s.name == "train" and s.status == "running" for s in stages):
                break
            assert doomed.running, (tmp_path / "doomed.log").read_text()
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the train stage never started")
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
        survivor = _worker(sqlite_settings, url, prefix, "survivor", tmp_path / "survivor.log")
        run = await until_ended(registry, run_id, timeout_s=180)
        assert run.status == "succeeded", (run.error, (tmp_path / "survivor.log").read_text())
        train = next(s for s in run.stages if s.name == "train")
        assert train.attempts == 2
        assert train.worker is not None
        assert train.worker.endswith(" survivor")
        assert [s.name for s in run.stages] == list(STAGE_NAMES)  # each stage recorded once
    finally:
        doomed.kill()
        if survivor is not None:
            survivor.stop(30)
        await broker.close()
        await delete_queues(url, [f"{prefix}.{stage}" for stage in STAGE_NAMES])

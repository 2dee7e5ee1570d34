"""Helpers of the stage worker tests: a small spec, workers run as tasks, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from shipyard.messaging import Broker, open_broker
from shipyard.pipeline import parse_spec
from shipyard.pipeline.events import submit_run
from shipyard.pipeline.workers import StageWorker, WorkerConfig
from shipyard.registry import Registry, RunInfo

SMALL_SPEC = """\
name: fraud
data:
  generate: {dataset: fraud, rows: 2000, seed: 7}
  dataset: fraud
  target: Class
task: classification
model:
  name: fraud
  type: HistGradientBoostingClassifier
  params: {max_iter: 20}
split: {test_size: 0.25, stratify: true, random_state: 42}
metrics: [average_precision, roc_auc]
promotion: {alias: production, require: beats_current}
"""


async def submit(registry: Registry, broker: Broker, prefix: str, text: str = SMALL_SPEC) -> str:
    """Submit ``text`` (default the small fraud spec) and return the run's id."""
    return await submit_run(registry, broker, parse_spec(text), text, prefix=prefix)


async def until_ended(registry: Registry, run_id: str, timeout_s: float = 120.0) -> RunInfo:
    """The run once it succeeded or failed; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = await asyncio.to_thread(registry.runs.get, run_id)
        if run.status in ("succeeded", "failed"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end within {timeout_s} s: {run}")


@contextlib.asynccontextmanager
async def running_worker(
    url: str, registry: Registry, config: WorkerConfig, *, redelivery_ms: float = 30_000
) -> AsyncIterator[StageWorker]:
    """A stage worker consuming in a task of this loop, stopped (and its broker closed)
    after the block."""
    broker = open_broker(url, redelivery_ms=redelivery_ms)
    worker = StageWorker(broker, registry, config)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await broker.close()

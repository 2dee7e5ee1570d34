"""The scorer with a version in shadow (in-process broker, real registry and Parquet log):
production answers every message, and the log holds both versions' rows under its ids."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from shipyard.inference.predictor import ScoredRows
from shipyard.monitoring.log import ParquetLog
from shipyard.monitoring.recorder import PredictionRecorder
from shipyard.registry import SHADOW_ALIAS, Registry

from .conftest import MODEL, Rig, transaction

pytestmark = pytest.mark.anyio
Rigs = Callable[..., Awaitable[Rig]]


async def bounded(condition: Callable[[], bool], what: str, rounds: int = 300) -> None:
    """Wait until ``condition`` holds, 300 rounds of 0.1 s at most."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"gave up waiting until {what}")


async def test_a_version_in_shadow_scores_what_production_answered(
    rigs: Rigs, stream_registry: Registry, tmp_path: Path
) -> None:
    stream_registry.promote(f"{MODEL}:2", SHADOW_ALIAS)
    rig = await rigs(batch_size=16)
    log = ParquetLog(tmp_path)
    recorder = PredictionRecorder(log, durable_flush_ms=20)
    rig.scorer.recorder = recorder
    service = rig.scorer.service
    shadowed: list[str] = []
    logger = recorder.scored_logger("stream")

    def hook(scored: ScoredRows) -> None:
        logger(scored)
        shadowed.extend(scored.ids)

    service.hooks.shadowed = hook
    await rig.start()
    # The scorer resolves its model on the first message; the shadow is loaded after it.
    await rig.publish([transaction("warm", 0.1)])
    assert len(await rig.collect("results", 1)) == 1
    await bounded(lambda: service.shadowing(MODEL) == 2, f"{MODEL}:2 scores in shadow")
    ids = [f"s{i}" for i in range(40)]
    await rig.publish([transaction(i, n / 40) for n, i in enumerate(ids)])
    results = await rig.collect("results", 40)
    await bounded(lambda: set(ids) <= set(shadowed), "the shadow scored the 40")
    await rig.stop()
    recorder.close()
    assert {r["id"] for r in results} == set(ids)
    assert {r["version"] for r in results} == {1}  # production answers
    tables = log.scan(MODEL)
    for version in (1, 2):
        by_id = {row["id"]: row for row in tables[version].to_pylist()}
        assert set(ids) <= set(by_id), version
        assert {by_id[i]["source"] for i in ids} == {"stream"}
    answered = {r["id"]: r for r in results}
    for row in tables[1].to_pylist():
        if row["id"] in answered:
            assert row["score"] == pytest.approx(answered[row["id"]]["score"])

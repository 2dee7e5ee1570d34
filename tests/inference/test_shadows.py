"""InferenceService's shadow scoring over a real registry (SQLite and PostgreSQL): the version
behind a model's ``shadow`` alias scores answered rows off the response path."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

import numpy as np
import pytest

from shipyard.inference import ExportedModel
from shipyard.inference.formats import ONNX_FILE
from shipyard.inference.predictor import Outputs, Predictor, ScoredRows
from shipyard.inference.service import InferenceService, ServiceHooks
from shipyard.registry import SHADOW_ALIAS, ModelVersionInfo, Registry

from .test_service import Register, expected, rows, run


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.02)


def test_the_shadow_scores_answered_rows_with_their_ids_in_its_own_feature_order(
    registry: Registry,
    register: Register,
    exported_models: list[ExportedModel],
    reordered_model: ExportedModel,
) -> None:
    register("m", 0, promote="production")
    register("m", reordered_model, promote=SHADOW_ALIAS)  # features d, c, b, a
    features = rows(5)
    scored: list[ScoredRows] = []

    async def scenario() -> tuple[int, Outputs]:
        service = InferenceService(registry, hooks=ServiceHooks(shadowed=scored.append))
        try:
            await service.start(["m"])
            assert service.shadowing("m") == 2
            answer = await service.infer("m", lambda layout: layout.check(features))
            ids = [f"r{i}" for i in range(5)]
            names = answer.layout.names
            assert service.shadow("m", answer.version, ids, names, features)
            await until(lambda: bool(scored), "the shadow scored the request")
            return answer.version, answer.outputs
        finally:
            await service.close()

    version, outputs = run(scenario())
    assert version == 1  # production answers
    np.testing.assert_allclose(
        outputs["probability"], expected(exported_models[0], features)["probability"], rtol=1e-5
    )
    [shadow] = scored
    assert (shadow.model, shadow.version, list(shadow.ids)) == ("m", 2, [f"r{i}" for i in range(5)])
    assert list(shadow.names) == ["d", "c", "b", "a"]
    reordered = features[:, ::-1]
    np.testing.assert_array_equal(shadow.features, reordered)
    np.testing.assert_allclose(
        shadow.outputs["probability"],
        expected(reordered_model, reordered)["probability"],
        rtol=1e-5,
    )


def test_a_full_shadow_queue_drops_and_counts_and_never_waits(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1, promote=SHADOW_ALIAS)
    dropped: list[tuple[str, int]] = []
    scored: list[ScoredRows] = []
    hooks = ServiceHooks(
        shadowed=scored.append, shadow_dropped=lambda name, n: dropped.append((name, n))
    )

    async def scenario() -> list[bool]:
        service = InferenceService(registry, hooks=hooks, shadow_queue=2)
        try:
            await service.start(["m"])
            names = ["a", "b", "c", "d"]
            # No await in between: the shadow's task cannot take any, so the queue fills.
            queued = [service.shadow("m", 1, [f"r{i}"], names, rows(1, i)) for i in range(5)]
            assert service.shadow_dropped == 3
            await until(lambda: len(scored) == 1, "the queued two were scored")
            return queued
        finally:
            await service.close()

    assert run(scenario()) == [True, True, False, False, False]
    assert dropped == [("m", 1)] * 3
    # What queued meanwhile is scored in one call, the rows in the order they came.
    [batch] = scored
    assert list(batch.ids) == ["r0", "r1"]
    np.testing.assert_array_equal(batch.features, np.concatenate([rows(1, 0), rows(1, 1)]))
    assert len(batch.outputs["probability"]) == 2


def test_no_shadow_for_the_answering_version_a_missing_feature_or_no_alias(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1)

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            await service.start(["m"])
            assert service.shadowing("m") is None
            assert not service.shadow("m", 1, ["r"], ["a", "b", "c", "d"], rows(1))
            registry.promote("m:2", SHADOW_ALIAS)
            await service.refresh()
            assert service.shadowing("m") == 2
            assert not service.shadow("m", 2, ["r"], ["a", "b", "c", "d"], rows(1))  # itself
            three = np.zeros((1, 3), np.float32)
            assert not service.shadow("m", 1, ["r"], ["a", "b", "c"], three)  # lacks d
            assert service.shadow_dropped == 1
        finally:
            await service.close()

    run(scenario())


def test_the_shadow_follows_its_alias_and_a_failing_log_spares_the_next_request(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1, promote=SHADOW_ALIAS)
    register("m", 1)
    calls: list[ScoredRows] = []

    def shadowed(scored: ScoredRows) -> None:
        calls.append(scored)
        if len(calls) == 1:
            raise RuntimeError("the log is down")

    async def scenario() -> None:
        service = InferenceService(registry, hooks=ServiceHooks(shadowed=shadowed))
        try:
            await service.start(["m"])
            names = ["a", "b", "c", "d"]
            assert service.shadow("m", 1, ["r1"], names, rows(1))
            await until(lambda: service.shadow_dropped == 1, "the failure was counted")
            assert service.shadow("m", 1, ["r2"], names, rows(1))
            await until(lambda: len(calls) == 2, "the next request was scored")
            registry.promote("m:3", SHADOW_ALIAS)
            await service.refresh()
            assert service.shadowing("m") == 3
            registry.retraining.close_shadow("m", 3, promote_over=None, actor="t", events=[])
            await service.refresh()
            assert service.shadowing("m") is None
            assert not service.shadow("m", 1, ["r3"], names, rows(1))
        finally:
            await service.close()

    run(scenario())
    assert [c.version for c in calls] == [2, 2]


def test_a_shadow_moved_to_a_version_that_cannot_load_stops_scoring(
    registry: Registry,
    register: Register,
    exported_models: list[ExportedModel],
    reordered_model: ExportedModel,
) -> None:
    register("m", 0, promote="production")
    register("m", reordered_model, promote=SHADOW_ALIAS)
    register("m", 1)
    path = registry.store.path_of(hashlib.sha256(exported_models[1].files[ONNX_FILE]).hexdigest())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # v3's artifact is tampered: refused at load
    path.write_bytes(bytes(data))

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            await service.start(["m"])
            assert service.shadowing("m") == 2
            registry.promote("m:3", SHADOW_ALIAS)
            await service.refresh()
            assert service.shadowing("m") is None  # not v2, which the alias left
            assert not service.shadow("m", 1, ["r"], ["a", "b", "c", "d"], rows(1))
        finally:
            await service.close()

    run(scenario())


def test_a_failing_shadow_is_logged_once_and_its_rows_counted(
    registry: Registry, register: Register, caplog: pytest.LogCaptureFixture
) -> None:
    register("m", 0, promote="production")
    register("m", 1, promote=SHADOW_ALIAS)

    def shadowed(scored: ScoredRows) -> None:
        raise RuntimeError("the log is down")

    async def scenario() -> None:
        service = InferenceService(registry, hooks=ServiceHooks(shadowed=shadowed))
        try:
            await service.start(["m"])
            for i in range(3):
                assert service.shadow("m", 1, [f"r{i}"], ["a", "b", "c", "d"], rows(1))
                await until(lambda n=i + 1: service.shadow_dropped == n, "the failure was counted")
        finally:
            await service.close()

    with caplog.at_level(logging.ERROR, logger="shipyard.inference.service"):
        run(scenario())
    assert [r.message for r in caplog.records] == ["shadow m:2 failed on 1 rows"]


class CountingService(InferenceService):
    """Counts the versions it loads (and verifies) from the registry."""

    loads: list[int]

    def _load(self, info: ModelVersionInfo) -> Predictor:
        self.loads.append(info.version)
        return super()._load(info)


def test_a_promoted_shadow_serves_with_the_predictor_already_loaded(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1, promote=SHADOW_ALIAS)

    async def scenario() -> None:
        service = CountingService(registry)
        service.loads = []
        try:
            await service.start(["m"])
            assert service.loads == [1, 2]
            registry.retraining.close_shadow("m", 2, promote_over=1, actor="t", events=[])
            await service.refresh()
            assert (await service.infer("m", lambda layout: layout.check(rows()))).version == 2
            assert service.shadowing("m") is None
            assert service.loads == [1, 2]  # v2 was not loaded a second time
        finally:
            await service.close()

    run(scenario())

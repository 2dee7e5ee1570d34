"""InferenceService over a real registry (SQLite and PostgreSQL) with small real models."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import skops.io
from sklearn.preprocessing import FunctionTransformer

from shipyard.data import generate_fraud
from shipyard.errors import (
    AliasNotFoundError,
    ArtifactError,
    ArtifactTamperedError,
    InvalidInputError,
    ModelNotFoundError,
    ShipyardError,
    VersionNotFoundError,
)
from shipyard.inference import ExportedModel
from shipyard.inference.formats import ONNX_FILE, SKOPS_FILE
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import Features, Outputs, ScoredRows, predictor_from_files
from shipyard.inference.service import InferenceService, ServiceHooks
from shipyard.registry import Registry, VerifiedArtifact
from shipyard.settings import Settings

T = TypeVar("T")
TIMEOUT = 60  # bounds every scenario; no test relies on timing
Register = Callable[..., Any]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine to completion, bounded so a hang fails instead of stalling."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, TIMEOUT)

    return asyncio.run(bounded())


def rows(n: int = 2, seed: int = 0) -> npt.NDArray[np.float32]:
    """Rows for the four-feature test models."""
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def matrix(features: Features) -> Callable[[FeatureLayout], Features]:
    """A decoder of rows that are already in the feature order of whichever version answers."""
    return lambda layout: layout.check(features)


def expected(model: ExportedModel, features: Features) -> Outputs:
    """What the exported model predicts when called directly."""
    predictor = predictor_from_files(
        "direct", 1, model.format, model.files, model.input_schema, model.output_schema
    )
    return predictor.predict(features)


def tamper(registry: Registry, model: ExportedModel) -> Path:
    """Flip one byte of the model's file in the artifact store."""
    path = registry.store.path_of(hashlib.sha256(model.files[ONNX_FILE]).hexdigest())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until the condition holds."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.02)


# -- resolving references -------------------------------------------------------------------


def test_bare_name_alias_and_version_each_answer_with_their_version(
    registry: Registry, register: Register, exported_models: list[ExportedModel]
) -> None:
    register("m", 0, promote="production")
    register("m", 1, promote="staging")
    features = rows(3)

    async def scenario() -> dict[str, tuple[str, int, Outputs]]:
        service = InferenceService(registry)
        try:
            answers = {}
            for ref in ("m", "m@production", "m@staging", "m:1", "m:2"):
                result = await service.infer(ref, matrix(features))
                answers[ref] = (result.model, result.version, result.outputs)
            return answers
        finally:
            await service.close()

    answers = run(scenario())
    assert {ref: version for ref, (_, version, _) in answers.items()} == {
        "m": 1,
        "m@production": 1,
        "m@staging": 2,
        "m:1": 1,
        "m:2": 2,
    }
    assert {model for model, _, _ in answers.values()} == {"m"}
    for ref, which in (("m", 0), ("m:2", 1)):
        outputs, direct = answers[ref][2], expected(exported_models[which], features)
        assert set(outputs) == {"probability", "label"}
        np.testing.assert_allclose(outputs["probability"], direct["probability"], rtol=1e-6)
        np.testing.assert_array_equal(outputs["label"], direct["label"])


def test_route_keys_and_what_is_loaded(registry: Registry, register: Register) -> None:
    register("m", 0, promote="production")

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            assert service.route_key("m") == "m@production"
            assert service.route_key("m@staging") == "m@staging"
            assert service.route_key("m:3") == "m:3"
            assert service.loaded("m") is None  # nothing loaded, and no database touched
            loaded = await service.model("m")
            assert service.loaded("m") is loaded is service.loaded("m@production")
            assert loaded.key == ("m", 1)
            assert loaded.layout.names == ["a", "b", "c", "d"]
            assert service.models == [loaded]
        finally:
            await service.close()

    run(scenario())


def test_unknown_model_version_and_bad_reference(registry: Registry, register: Register) -> None:
    register("m", 0, promote="production")

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
                await service.infer("nope", matrix(rows()))
            with pytest.raises(VersionNotFoundError, match="has no version 7"):
                await service.infer("m:7", matrix(rows()))
            with pytest.raises(InvalidInputError, match="is not a model reference"):
                await service.infer("m:x:y", matrix(rows()))
            assert service.models == []
        finally:
            await service.close()

    run(scenario())


def test_no_production_alias_says_how_to_promote(registry: Registry, register: Register) -> None:
    register("m", 0)

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            with pytest.raises(AliasNotFoundError) as caught:
                await service.infer("m", matrix(rows()))
            assert "no version of 'm' has alias 'production'" in str(caught.value)
            assert "shipyard models promote m:N --alias production" in str(caught.value)
            assert (await service.infer("m:1", matrix(rows()))).version == 1
        finally:
            await service.close()

    run(scenario())


def test_a_failed_first_lookup_is_retried_on_the_next_request(
    registry: Registry, register: Register
) -> None:
    async def scenario() -> int:
        service = InferenceService(registry)
        try:
            with pytest.raises(ModelNotFoundError):
                await service.infer("m", matrix(rows()))
            await asyncio.to_thread(register, "m", 0, "production")
            return (await service.infer("m", matrix(rows()))).version
        finally:
            await service.close()

    assert run(scenario()) == 1


def test_bad_rows_are_refused_before_batching(registry: Registry, register: Register) -> None:
    register("m", 0, promote="production")

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            with pytest.raises(InvalidInputError, match=r"expected shape \[rows, 4\]"):
                await service.infer("m", matrix(np.zeros((1, 3), np.float32)))
            with pytest.raises(InvalidInputError, match="feature 'b' is missing"):
                await service.infer("m", matrix(np.array([[0, np.nan, 0, 0]], np.float32)))
            assert (await service.infer("m", matrix(rows()))).version == 1
        finally:
            await service.close()

    run(scenario())


def test_concurrent_requests_are_batched_and_observed(
    registry: Registry, register: Register, exported_models: list[ExportedModel]
) -> None:
    register("m", 0, promote="production")
    batches: list[tuple[str, int, int]] = []
    hooks = ServiceHooks(
        observer=lambda name, version: lambda n, wait: batches.append((name, version, n))
    )
    requests = [rows(1, seed=i) for i in range(40)]

    async def scenario() -> list[Outputs]:
        service = InferenceService(registry, max_batch_size=8, max_batch_delay_ms=50, hooks=hooks)
        try:
            await service.model("m")
            results = await asyncio.gather(*(service.infer("m", matrix(r)) for r in requests))
            return [r.outputs for r in results]
        finally:
            await service.close()

    results = run(scenario())
    assert all(name == "m" and version == 1 and n <= 8 for name, version, n in batches)
    assert sum(n for _, _, n in batches) == 40
    assert len(batches) < 40
    direct = expected(exported_models[0], np.concatenate(requests))
    got = np.concatenate([r["probability"] for r in results])
    np.testing.assert_allclose(got, direct["probability"], rtol=1e-6)


def test_requests_with_ids_reach_answered_once_a_batch(
    registry: Registry, register: Register, exported_models: list[ExportedModel]
) -> None:
    register("m", 0, promote="production")
    scored: list[ScoredRows] = []
    batches: list[int] = []
    hooks = ServiceHooks(
        observer=lambda name, version: lambda n, wait: batches.append(n),
        answered=scored.append,
    )
    requests = [rows(1 + i % 3, seed=i) for i in range(30)]

    def ids_of(i: int) -> Callable[[int], list[str]]:
        return lambda n: [f"r{i}:{row}" for row in range(n)]

    async def scenario() -> list[Any]:
        service = InferenceService(registry, max_batch_size=8, max_batch_delay_ms=50, hooks=hooks)
        try:
            await service.model("m")
            started = time.perf_counter()
            return await asyncio.gather(
                *(
                    # every third request without ids: predicted and answered, not told
                    service.infer("m", matrix(r))
                    if i % 3 == 2
                    else service.infer("m", matrix(r), ids_of(i), started)
                    for i, r in enumerate(requests)
                )
            )
        finally:
            await service.close()

    results = run(scenario())
    assert [list(r.ids) for r in results] == [
        [] if i % 3 == 2 else ids_of(i)(len(r)) for i, r in enumerate(requests)
    ]
    assert 0 < len(scored) <= len(batches) < len(requests)  # a call a batch, not a request
    assert all(
        (s.model, s.version, list(s.names)) == ("m", 1, ["a", "b", "c", "d"]) for s in scored
    )
    told = {i: n for s in scored for n, i in enumerate(s.ids)}
    expected_ids = [i for r in results for i in r.ids]
    assert sorted(told) == sorted(expected_ids)  # each answered row with ids, once
    direct = {
        row_id: (features, probability)
        for r, features in zip(results, requests, strict=True)
        for row_id, features, probability in zip(
            r.ids, features, r.outputs["probability"], strict=False
        )
    }
    for s in scored:
        assert len(s.ids) == len(s.features) == len(s.outputs["probability"]) == len(s.latency_ms)
        assert isinstance(s.latency_ms, np.ndarray)
        assert (s.latency_ms > 0).all()
        for row, row_id in enumerate(s.ids):
            features, probability = direct[row_id]
            np.testing.assert_array_equal(s.features[row], features)
            assert s.outputs["probability"][row] == probability


def test_ids_that_refuse_a_request_stop_it_before_anything_is_predicted(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    batches: list[int] = []
    scored: list[ScoredRows] = []
    hooks = ServiceHooks(
        observer=lambda name, version: lambda n, wait: batches.append(n), answered=scored.append
    )

    def refuse(rows: int) -> list[str]:
        raise InvalidInputError(f"2 ids for {rows} rows; give one id per row")

    async def scenario() -> None:
        service = InferenceService(registry, hooks=hooks)
        try:
            with pytest.raises(InvalidInputError, match="2 ids for 3 rows"):
                await service.infer("m", matrix(rows(3)), refuse)
            with pytest.raises(ValueError, match="1 ids made for 3 rows"):  # an adapter's bug
                await service.infer("m", matrix(rows(3)), lambda n: ["x"])
        finally:
            await service.close()

    run(scenario())
    assert batches == []
    assert scored == []


# -- loading --------------------------------------------------------------------------------


def test_concurrent_first_requests_load_the_version_once(
    registry: Registry, register: Register, monkeypatch: pytest.MonkeyPatch
) -> None:
    register("m", 0, promote="production")
    loads: list[str] = []
    load_artifact = registry.load_artifact

    def counting(ref: Any) -> VerifiedArtifact:
        loads.append(str(ref))
        return load_artifact(ref)

    monkeypatch.setattr(registry, "load_artifact", counting)

    async def scenario() -> set[int]:
        service = InferenceService(registry)
        try:
            results = await asyncio.gather(*(service.infer("m", matrix(rows())) for _ in range(20)))
            assert len(service.models) == 1
            return {r.version for r in results}
        finally:
            await service.close()

    assert run(scenario()) == {1}
    assert loads == ["m:1"]


def test_refs_to_the_same_version_share_one_loaded_model(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            models = await asyncio.gather(
                service.model("m"), service.model("m:1"), service.model("m@production")
            )
            assert models[0] is models[1] is models[2]
            assert service.models == [models[0]]
        finally:
            await service.close()

    run(scenario())


def test_a_tampered_artifact_is_refused_at_load(
    registry: Registry, register: Register, exported_models: list[ExportedModel]
) -> None:
    register("m", 0, promote="production")
    tamper(registry, exported_models[0])
    failures: list[tuple[str, ShipyardError]] = []
    hooks = ServiceHooks(load_failed=lambda name, error: failures.append((name, error)))

    async def scenario() -> None:
        service = InferenceService(registry, hooks=hooks)
        try:
            with pytest.raises(ArtifactError, match="refused") as caught:
                await service.infer("m", matrix(rows()))
            assert isinstance(caught.value, ArtifactTamperedError)
            assert "m:1" in str(caught.value)
            assert service.models == []
        finally:
            await service.close()

    run(scenario())
    assert [name for name, _ in failures] == ["m"]
    assert isinstance(failures[0][1], ArtifactTamperedError)


# -- following aliases ----------------------------------------------------------------------


def test_refresh_swaps_while_a_request_in_flight_finishes_on_the_old_version(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1)
    swaps: list[tuple[str, int, int]] = []
    hooks = ServiceHooks(swapped=lambda ref, old, new: swaps.append((ref, old, new)))

    async def scenario() -> None:
        # v1's predictor (in a thread) holds a request until the swap is done.
        service = InferenceService(registry, predict_in_thread=True, hooks=hooks)
        try:
            old = await service.model("m")
            old_predict = old.batcher._predict
            served_when_v1_predicted: list[int] = []
            entered, release = threading.Event(), threading.Event()

            def recording(features: Features) -> Outputs:
                entered.set()
                assert release.wait(30)
                now = service.loaded("m")
                assert now is not None
                served_when_v1_predicted.append(now.info.version)
                return old_predict(features)

            old.batcher._predict = recording
            held = asyncio.ensure_future(service.infer("m", matrix(rows(3))))
            assert await asyncio.to_thread(entered.wait, 30)  # in v1's predictor
            assert not held.done()

            await asyncio.to_thread(registry.promote, "m:2", "production")
            await service.refresh()
            new = service.loaded("m")
            assert new is not None
            assert new.info.version == 2
            release.set()

            in_flight = await held
            assert in_flight.version == 1
            assert len(in_flight.outputs["label"]) == 3
            assert served_when_v1_predicted == [2]  # v1 predicted it after the swap
            assert (await service.infer("m", matrix(rows()))).version == 2
            assert (await service.infer("m@production", matrix(rows()))).version == 2
            assert [m.key for m in service.models] == [("m", 2)]  # v1 was retired
        finally:
            await service.close()

    run(scenario())
    assert swaps == [("m@production", 1, 2)]


def test_a_pinned_version_keeps_serving_when_the_alias_moves(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1)

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            assert (await service.infer("m", matrix(rows()))).version == 1
            assert (await service.infer("m:1", matrix(rows()))).version == 1
            await asyncio.to_thread(registry.promote, "m:2", "production")
            await service.refresh()
            assert (await service.infer("m", matrix(rows()))).version == 2
            assert (await service.infer("m:1", matrix(rows()))).version == 1
            assert sorted(m.key for m in service.models) == [("m", 1), ("m", 2)]
        finally:
            await service.close()

    run(scenario())


def test_concurrent_refreshes_swap_once(registry: Registry, register: Register) -> None:
    register("m", 0, promote="production")
    register("m", 1)
    swaps: list[tuple[str, int, int]] = []
    hooks = ServiceHooks(swapped=lambda ref, old, new: swaps.append((ref, old, new)))

    async def scenario() -> None:
        service = InferenceService(registry, hooks=hooks)
        try:
            await service.model("m")
            await asyncio.to_thread(registry.promote, "m:2", "production")
            await asyncio.gather(service.refresh(), service.refresh(), service.refresh())
            assert [m.key for m in service.models] == [("m", 2)]
            assert (await service.infer("m", matrix(rows()))).version == 2
        finally:
            await service.close()

    run(scenario())
    assert swaps == [("m@production", 1, 2)]


def test_promoting_a_tampered_version_keeps_the_old_one_serving(
    registry: Registry, register: Register, exported_models: list[ExportedModel]
) -> None:
    register("m", 0, promote="production")
    register("m", 1)
    tamper(registry, exported_models[1])
    failures: list[str] = []
    hooks = ServiceHooks(load_failed=lambda name, error: failures.append(name))

    async def scenario() -> None:
        service = InferenceService(registry, hooks=hooks)
        try:
            with pytest.raises(ArtifactTamperedError):
                await service.model("m:2")
            assert (await service.infer("m", matrix(rows()))).version == 1
            await asyncio.to_thread(registry.promote, "m:2", "production")
            await service.refresh()  # logs the refusal; raises nothing
            results = await asyncio.gather(
                *(service.infer("m", matrix(rows(1, i))) for i in range(10))
            )
            assert {r.version for r in results} == {1}
            assert [m.key for m in service.models] == [("m", 1)]
        finally:
            await service.close()

    run(scenario())
    assert failures == ["m", "m"]


def test_promoting_a_version_with_untrusted_types_keeps_the_old_one_serving(
    registry: Registry, register: Register, exported_models: list[ExportedModel]
) -> None:
    register("m", 0, promote="production")
    model = exported_models[0]
    registry.register_version(
        "m",
        files={SKOPS_FILE: skops.io.dumps(FunctionTransformer(func=json.dumps))},
        format="skops",
        input_schema=model.input_schema,
        output_schema=model.output_schema,
        metrics={},
    )

    async def scenario() -> None:
        service = InferenceService(registry)
        try:
            assert (await service.infer("m", matrix(rows()))).version == 1
            await asyncio.to_thread(registry.promote, "m:2", "production")
            await service.refresh()
            assert (await service.infer("m", matrix(rows()))).version == 1
            with pytest.raises(ShipyardError, match=r"outside the allow-list: json\.dumps"):
                await service.model("m:2")
        finally:
            await service.close()

    run(scenario())


def test_refs_that_never_resolve_leave_no_lock_behind(registry: Registry) -> None:
    async def scenario() -> int:
        service = InferenceService(registry)
        try:
            for i in range(50):  # refs come from request URLs
                with pytest.raises(ModelNotFoundError):
                    await service.model(f"nope{i}")
            return len(service._locks)
        finally:
            await service.close()

    assert run(scenario()) == 0


def test_the_poll_task_follows_a_promotion_by_itself(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")
    register("m", 1)

    async def scenario() -> None:
        service = InferenceService(registry, poll_seconds=0.05)
        try:
            await service.start(["m"])
            assert (await service.infer("m", matrix(rows()))).version == 1
            await asyncio.to_thread(registry.promote, "m:2", "production")

            def moved() -> bool:
                loaded = service.loaded("m")
                return loaded is not None and loaded.info.version == 2

            await until(moved, "the poll task loads m:2")
            assert (await service.infer("m", matrix(rows()))).version == 2
            # and back again: a rollback is a move like any other
            await asyncio.to_thread(registry.rollback, "m")
            await until(lambda: not moved(), "the poll task goes back to m:1")
            assert (await service.infer("m", matrix(rows()))).version == 1
        finally:
            await service.close()

    run(scenario())


def test_the_poll_task_survives_a_registry_that_fails(
    registry: Registry, register: Register, monkeypatch: pytest.MonkeyPatch
) -> None:
    register("m", 0, promote="production")
    calls: list[int] = []
    get_version = registry.get_version

    def flaky(ref: Any) -> Any:
        calls.append(1)
        if len(calls) in (2, 3):  # the first polls after loading
            raise RuntimeError("database went away")
        return get_version(ref)

    monkeypatch.setattr(registry, "get_version", flaky)

    async def scenario() -> None:
        service = InferenceService(registry, poll_seconds=0.05)
        try:
            await service.start(["m"])
            await until(lambda: len(calls) >= 5, "the poll task keeps polling")
            assert (await service.infer("m", matrix(rows()))).version == 1
        finally:
            await service.close()

    run(scenario())


def test_close_drains_queued_requests(registry: Registry, register: Register) -> None:
    register("m", 0, promote="production")

    async def scenario() -> list[int]:
        service = InferenceService(registry, max_batch_delay_ms=60_000)
        await service.start(["m"])
        waiting = [asyncio.ensure_future(service.infer("m", matrix(rows(1, i)))) for i in range(5)]
        await asyncio.sleep(0)
        await service.close()
        return [task.result().version for task in waiting]

    assert run(scenario()) == [1] * 5


# -- a model trained by the pipeline --------------------------------------------------------


@pytest.mark.parametrize("ref", ["fraud", "fraud@production", "fraud:1"])
def test_a_pipeline_trained_model_serves(pipeline_home: Path, ref: str) -> None:
    frame = generate_fraud(50, seed=11)

    async def scenario() -> Any:
        with Registry.open(Settings(home=pipeline_home)) as registry:
            service = InferenceService(registry)
            try:
                return await service.infer(
                    ref,
                    lambda layout: layout.from_records(
                        frame[layout.names].to_dict(orient="records")
                    ),
                )
            finally:
                await service.close()

    result = run(scenario())
    assert (result.model, result.version) == ("fraud", 1)
    probability = result.outputs["probability"]
    assert probability.shape == (50,)
    assert ((probability >= 0) & (probability <= 1)).all()
    assert set(result.outputs["label"].tolist()) <= {0, 1}


# -- one version per request: decoded and predicted by the same version --------------------


def by_name(features: Features, names: list[str]) -> list[dict[str, float]]:
    """Rows of the test features (a, b, c, d) as records keyed by feature name."""
    columns = ["a", "b", "c", "d"]
    return [{n: float(row[columns.index(n)]) for n in names} for row in features]


def in_process(model: ExportedModel, records: list[dict[str, float]]) -> Outputs:
    """What ``model`` predicts for named records, with its own feature order."""
    names = model.input_schema["features"]
    return expected(model, np.array([[r[n] for n in names] for r in records], np.float32))


def serves(service: InferenceService, version: int) -> bool:
    """Whether ``m`` (production) is served by ``version`` now."""
    loaded = service.loaded("m")
    return loaded is not None and loaded.info.version == version


def test_under_swaps_to_a_reordered_version_every_answer_is_the_named_versions_own(
    registry: Registry,
    register: Register,
    exported_models: list[ExportedModel],
    reordered_model: ExportedModel,
) -> None:
    """Requests decoded by feature name while production moves back and forth between a
    version over ``a, b, c, d`` and one over ``d, c, b, a``: each answer must be exactly what
    the version it names predicts for those named values."""
    models = {
        register("m", exported_models[0]).version: exported_models[0],
        register("m", reordered_model).version: reordered_model,
    }
    registry.promote("m:1", "production")
    requests = [by_name(rows(1 + i % 3, seed=i), ["a", "b", "c", "d"]) for i in range(40)]
    swaps = 8

    async def client(
        service: InferenceService, stop: asyncio.Event, answers: list[Any], index: int
    ) -> None:
        for turn in range(100_000):  # bounded; the swaps end it long before
            if stop.is_set():
                return
            records = requests[(index + turn) % len(requests)]
            result = await service.infer(
                "m", lambda layout, records=records: layout.from_records(records)
            )
            answers.append((records, result))

    async def scenario() -> list[Any]:
        service = InferenceService(registry, poll_seconds=0.01, max_batch_delay_ms=1)
        answers: list[Any] = []
        stop = asyncio.Event()
        try:
            await service.start(["m"])
            clients = [asyncio.ensure_future(client(service, stop, answers, i)) for i in range(16)]
            for swap in range(swaps):
                target = 2 if swap % 2 == 0 else 1
                await asyncio.to_thread(registry.promote, f"m:{target}", "production")
                await until(lambda t=target: serves(service, t), f"the service serves m:{target}")
                seen = len(answers)
                await until(lambda s=seen: len(answers) > s + 50, "answers after the swap")
            stop.set()
            await asyncio.gather(*clients)
            return answers
        finally:
            await service.close()

    answers = run(scenario())
    versions = {result.version for _, result in answers}
    assert versions == {1, 2}, f"both versions must have answered, got {versions}"
    for records, result in answers:
        own = in_process(models[result.version], records)
        assert result.layout.names == models[result.version].input_schema["features"]
        np.testing.assert_allclose(result.outputs["probability"], own["probability"], rtol=1e-6)
        assert result.outputs["label"].tolist() == own["label"].tolist()


def test_a_request_whose_version_is_retired_before_it_is_batched_is_decoded_again(
    registry: Registry,
    register: Register,
    exported_models: list[ExportedModel],
    reordered_model: ExportedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The swap lands between decoding and submitting (the old batcher is closed): the
    request is decoded again, in the new version's feature order, and predicted by it."""
    register("m", exported_models[0])
    register("m", reordered_model)
    registry.promote("m:1", "production")
    records = by_name(rows(3, seed=4), ["a", "b", "c", "d"])
    layouts: list[list[str]] = []
    made: list[int] = []

    def ids(count: int) -> list[str]:
        made.append(count)
        return [f"x{row}" for row in range(count)]

    def decode(layout: FeatureLayout) -> Features:
        layouts.append(layout.names)
        return layout.from_records(records)

    async def scenario() -> Any:
        service = InferenceService(registry, poll_seconds=3600)
        try:
            old = await service.model("m")
            submit = old.batcher.submit

            async def swapped_meanwhile(features: Features, note: Any = None) -> Outputs:
                await asyncio.to_thread(registry.promote, "m:2", "production")
                await service.refresh()  # m now serves v2; v1's batcher closes
                await old.batcher.close()  # what retiring v1 does, finished now
                return await submit(features, note)

            monkeypatch.setattr(old.batcher, "submit", swapped_meanwhile)
            return await service.infer("m", decode, ids)
        finally:
            await service.close()

    result = run(scenario())
    assert layouts == [["a", "b", "c", "d"], ["d", "c", "b", "a"]]
    assert (result.version, result.layout.names) == (2, ["d", "c", "b", "a"])
    assert (made, list(result.ids)) == ([3], ["x0", "x1", "x2"])  # made once, kept
    np.testing.assert_allclose(
        result.outputs["probability"],
        in_process(reordered_model, records)["probability"],
        rtol=1e-6,
    )


def test_a_decoded_request_of_no_rows_is_not_predicted(
    registry: Registry, register: Register
) -> None:
    register("m", 0, promote="production")

    async def scenario() -> Any:
        service = InferenceService(registry)
        try:
            return await service.infer("m", lambda layout: np.empty((0, layout.width), np.float32))
        finally:
            await service.close()

    result = run(scenario())
    assert (result.version, result.outputs) == (1, {})

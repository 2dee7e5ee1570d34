"""Bagged ensembles: learners as pure functions of their index, assembled into one Bagging*
that predicts, exports and is served like any model; and whole runs on a real Dask cluster
(one LocalCluster for the module), a worker SIGKILLed mid-fit included."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.ensemble import BaggingClassifier, BaggingRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from dask_processes import houses_spec
from shipyard.data import get_dataset
from shipyard.errors import ArtifactError, ArtifactTamperedError, InvalidInputError
from shipyard.inference import export_model
from shipyard.inference.formats import skops_io
from shipyard.inference.predictor import load_predictor, predictor_from_files
from shipyard.pipeline import ClusterOptions, Runner, parse_spec
from shipyard.pipeline.ensemble import (
    CLASSIFIER_ATTRIBUTES,
    FITTED_ATTRIBUTES,
    LearnerRecipe,
    TrainingData,
    _stored_learners,
    assemble,
    fit_learner,
    learner_draw,
)
from shipyard.registry import Registry
from shipyard.settings import Settings

RECIPE = LearnerRecipe(
    model_type="DecisionTreeRegressor",
    params={"max_depth": 6},
    scale=False,
    bootstrap=True,
    sample_fraction=0.8,
    features_each=4,
    seed=5,
)


@pytest.fixture(scope="module")
def housing() -> tuple[np.ndarray, np.ndarray]:
    dataset = get_dataset("housing")
    frame = dataset.generate(2000, 1)
    features = frame[dataset.schema.feature_names].to_numpy(np.float32)
    return features, frame["price"].to_numpy()


def test_a_learner_is_a_pure_function_of_data_recipe_and_index(housing: Any) -> None:
    data = TrainingData(*housing)
    first, again, other = (fit_learner(data, RECIPE, i) for i in (3, 3, 4))
    x = housing[0][:50]
    assert np.array_equal(first.features, again.features)
    assert len(first.features) == 4
    assert np.array_equal(
        first.estimator.predict(x[:, first.features]), again.estimator.predict(x[:, again.features])
    )
    assert not np.array_equal(first.features, other.features) or not np.array_equal(
        first.estimator.predict(x[:, first.features]), other.estimator.predict(x[:, other.features])
    )


def test_draws_follow_the_recipe() -> None:
    rows, features = learner_draw(RECIPE, 0, 1000, 7)
    assert len(rows) == 800
    assert len(set(rows.tolist())) < 800  # with replacement
    assert features.tolist() == sorted(set(features.tolist()))
    without = LearnerRecipe(**{**RECIPE.__dict__, "bootstrap": False})
    rows, _ = learner_draw(without, 0, 1000, 7)
    assert len(set(rows.tolist())) == 800


def test_sklearn_still_has_the_bagging_internals_assemble_sets(housing: Any) -> None:
    # assemble() builds a fitted Bagging* by hand. If this fails after a scikit-learn
    # upgrade, the attributes Bagging*.fit sets changed: update ensemble.assemble and the
    # pin in pyproject.toml together.
    x, y = housing
    native = BaggingRegressor(DecisionTreeRegressor(max_depth=2), n_estimators=2).fit(x, y)
    missing = [name for name in FITTED_ATTRIBUTES if not hasattr(native, name)]
    assert not missing, f"BaggingRegressor.fit no longer sets {missing}"
    labels = (y > np.median(y)).astype(int)
    native_classifier = BaggingClassifier(DecisionTreeClassifier(max_depth=2), n_estimators=2)
    native_classifier.fit(x, labels)
    missing = [
        name
        for name in (*FITTED_ATTRIBUTES, *CLASSIFIER_ATTRIBUTES)
        if not hasattr(native_classifier, name)
    ]
    assert not missing, f"BaggingClassifier.fit no longer sets {missing}"


def test_the_assembled_regressor_averages_its_learners_and_exports_to_onnx(housing: Any) -> None:
    x, y = housing
    learners = [fit_learner(TrainingData(x, y), RECIPE, i) for i in range(6)]
    bagging = assemble(learners, RECIPE, n_features=7, rows=len(x))
    expected = np.mean([ln.estimator.predict(x[:, ln.features]) for ln in learners], axis=0)
    np.testing.assert_allclose(bagging.predict(x), expected, rtol=1e-12)
    exported = export_model(bagging, feature_names=[f"f{i}" for i in range(7)], task="regression")
    assert exported.format == "onnx"
    predictor = predictor_from_files(
        "m", 1, "onnx", exported.files, exported.input_schema, exported.output_schema
    )
    np.testing.assert_allclose(predictor.predict(x)["prediction"], expected, rtol=1e-5)


def test_the_assembled_classifier_soft_votes_over_the_real_labels(housing: Any) -> None:
    x, y = housing
    labels = np.where(y > np.median(y), "dear", "cheap")
    classes, encoded = np.unique(labels, return_inverse=True)
    recipe = LearnerRecipe(**{**RECIPE.__dict__, "model_type": "DecisionTreeClassifier"})
    data = TrainingData(x, encoded, n_classes=2)
    learners = [fit_learner(data, recipe, i) for i in range(5)]
    bagging = assemble(learners, recipe, n_features=7, rows=len(x), classes=classes)
    proba = np.mean([ln.estimator.predict_proba(x[:, ln.features]) for ln in learners], axis=0)
    np.testing.assert_allclose(bagging.predict_proba(x), proba)
    assert set(bagging.predict(x)) <= {"cheap", "dear"}
    exported = export_model(
        bagging, feature_names=[f"f{i}" for i in range(7)], task="classification"
    )
    assert exported.format == "onnx"
    predictor = predictor_from_files(
        "m", 1, "onnx", exported.files, exported.input_schema, exported.output_schema
    )
    outputs = predictor.predict(x)
    assert np.mean(outputs["label"] == bagging.predict(x)) > 0.995


def test_a_learner_whose_sample_misses_a_class_fails_saying_what_to_change(
    housing: Any,
) -> None:
    x, _ = housing
    target = np.zeros(len(x), dtype=np.int64)
    target[0] = 1  # one positive row: a small sample misses it
    recipe = LearnerRecipe(
        **{**RECIPE.__dict__, "model_type": "DecisionTreeClassifier", "sample_fraction": 0.01}
    )
    with pytest.raises(InvalidInputError, match=r"drew 1 of the 2 classes.*sample_fraction"):
        fit_learner(TrainingData(x, target, n_classes=2), recipe, 0)


def test_stored_learners_reload_only_from_verified_bytes(housing: Any, registry: Registry) -> None:
    x, y = housing
    data = TrainingData(x, y)
    learner = fit_learner(data, RECIPE, 1)
    run_id = registry.runs.start("houses", "", {})
    digest = registry.store.put(skops_io().dumps(learner.estimator))
    registry.runs.add_learner(run_id, "f" * 64, 1, digest)
    registry.runs.add_learner(run_id, "f" * 64, 7, digest)  # beyond the 4 asked for: ignored
    (reloaded,) = _stored_learners(registry, run_id, "f" * 64, RECIPE, data, 4).values()
    assert np.array_equal(reloaded.features, learner.features)
    assert np.array_equal(
        reloaded.estimator.predict(x[:, reloaded.features]),
        learner.estimator.predict(x[:, learner.features]),
    )
    path = registry.store.path_of(digest)
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(ArtifactTamperedError, match="modified after it was stored"):
        _stored_learners(registry, run_id, "f" * 64, RECIPE, data, 4)
    untrusted = registry.store.put(skops_io().dumps(Fraction(1, 3)))
    registry.runs.add_learner(run_id, "e" * 64, 0, untrusted)
    with pytest.raises(ArtifactError, match="outside the allow-list"):
        _stored_learners(registry, run_id, "e" * 64, RECIPE, data, 4)


# -- whole runs on a cluster ----------------------------------------------------------------

REGRESSION = houses_spec(
    rows=6000, data_seed=3, learners=10, features=5, seed=4, metrics="r2, rmse"
)

# 0.5 % fraud: a learner drawing 2 % of 3,000 training rows often draws no fraud at all.
RARE_CLASS = """\
name: rare
data:
  generate: {dataset: fraud, rows: 4000, seed: 2}
  target: Class
model: {name: rare, type: DecisionTreeClassifier, params: {max_depth: 3}}
ensemble: {learners: 6, sample_fraction: 0.02, seed: 1, min_learners: MIN}
split: {test_size: 0.25}
metrics: [average_precision]
promotion: {require: always}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            memory_limit=0,
        ) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield local, client


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    with Registry.open(settings) as opened:
        yield opened


def _predictions(registry: Registry, ref: str, rows: np.ndarray) -> np.ndarray:
    predictor = load_predictor(registry.load_artifact(ref))
    return predictor.predict(rows)["prediction"]


def test_a_worker_killed_mid_fit_changes_nothing(
    cluster: tuple[LocalCluster, Client], registry: Registry
) -> None:
    local, client = cluster
    options = ClusterOptions(scheduler=local.scheduler_address)
    spec = parse_spec(REGRESSION)
    undisturbed = Runner(registry, cluster=options).run(spec, REGRESSION)

    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_one_worker(done: int, failed: int, total: int) -> None:
        if done == 2 and not killed:
            killed.append(done)
            os.kill(next(iter(pids.values())), signal.SIGKILL)

    disturbed = Runner(registry, cluster=options, learner_listener=kill_one_worker).run(
        spec, REGRESSION
    )
    assert killed == [2]  # the kill landed with 8 of 10 learners still to fit
    run = registry.runs.get(disturbed.run_id)
    assert run.metrics["learners"] == 10
    assert run.metrics["learners_failed"] == 0
    assert run.params["cluster"].endswith(local.scheduler_address)
    assert registry.get_version("houses:2").tags["learners"] == "10"
    assert disturbed.version.format == "onnx"
    assert disturbed.metrics["r2"] == undisturbed.metrics["r2"] > 0.7
    rows = get_dataset("housing").generate(500, 99)
    features = rows[get_dataset("housing").schema.feature_names].to_numpy(np.float32)
    assert np.array_equal(
        _predictions(registry, "houses:1", features), _predictions(registry, "houses:2", features)
    )


def test_failing_learners_are_left_out_above_min_learners(
    cluster: tuple[LocalCluster, Client], registry: Registry
) -> None:
    options = ClusterOptions(scheduler=cluster[0].scheduler_address)
    text = RARE_CLASS.replace("MIN", "1")
    result = Runner(registry, cluster=options).run(parse_spec(text), text)
    run = registry.runs.get(result.run_id)
    assert run.metrics["learners_failed"] > 0
    assert run.metrics["learners"] == 6 - run.metrics["learners_failed"]
    assert result.version.tags["learners"] == str(int(run.metrics["learners"]))


def test_below_min_learners_the_run_fails_and_registers_nothing(
    cluster: tuple[LocalCluster, Client], registry: Registry
) -> None:
    options = ClusterOptions(scheduler=cluster[0].scheduler_address)
    text = RARE_CLASS.replace("MIN", "6")
    with pytest.raises(InvalidInputError) as raised:
        Runner(registry, cluster=options).run(parse_spec(text), text)
    message = str(raised.value)
    assert "learners fitted, fewer than ensemble.min_learners 6" in message
    assert "drew 1 of the 2 classes" in message
    (run,) = registry.runs.recent()
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("train: InvalidInputError: only ")
    assert registry.list_models() == []

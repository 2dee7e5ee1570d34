"""Bagged ensembles: each learner a pure function of (training data, recipe, index), and the
fitted learners assembled into one scikit-learn ``BaggingRegressor``/``BaggingClassifier``.

Learner ``i`` draws its rows and features and seeds its estimator from
``SeedSequence([seed, i])`` alone, so the same spec and data give the same learner on any
worker, in any order, after any retry or resume. The learners are fitted elsewhere (as Dask
tasks, ``cluster/learners.py``); this module knows no cluster.

The assembled estimator is a fitted ``Bagging*`` built from the learners: its attributes
(``estimators_``, ``estimators_features_``, ``n_features_in_``, ``classes_``, …) are set by
hand as ``Bagging*.fit`` would, so that scikit-learn predicts with it and skl2onnx converts
it (Gather of each learner's features, mean of predictions or of probabilities). That reaches
into scikit-learn internals: the pin in pyproject.toml says so, and
``tests/pipeline/test_ensemble.py`` fails by name when an upgrade changes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shipyard.cluster import cluster_description, open_cluster
from shipyard.cluster.learners import fit_on_cluster
from shipyard.errors import ClusterError, InvalidInputError, SpecError
from shipyard.inference.formats import skops_dumps, skops_io, skops_trusted_types
from shipyard.pipeline.estimators import build_estimator

if TYPE_CHECKING:
    from sklearn.ensemble import BaggingClassifier, BaggingRegressor

    from shipyard.pipeline.spec import Spec
    from shipyard.registry import Registry

#: The attributes ``assemble`` sets, as ``Bagging*.fit`` sets them (checked by a test).
FITTED_ATTRIBUTES = (
    "estimator_",
    "estimators_",
    "estimators_features_",
    "n_features_in_",
    "_max_samples",
    "_max_features",
)
CLASSIFIER_ATTRIBUTES = ("classes_", "n_classes_")


@dataclass(frozen=True)
class TrainingData:
    """What every learner trains on: features as float32 and the target (class indices
    0..n-1 for a classifier, so that soft voting adds up the same columns)."""

    features: npt.NDArray[np.float32]
    target: npt.NDArray[Any]
    n_classes: int | None = None

    @property
    def rows(self) -> int:
        """Number of training rows."""
        return int(self.features.shape[0])


@dataclass(frozen=True)
class LearnerRecipe:
    """How every learner of one ensemble is built and sampled; plain values, so that it
    travels to workers and hashes into a fingerprint."""

    model_type: str
    params: dict[str, Any]
    scale: bool
    bootstrap: bool
    sample_fraction: float
    features_each: int
    seed: int

    def fingerprint(self, dataset_sha256: str) -> str:
        """A digest of the recipe and the training data: a stored learner is reused only by
        a run whose fingerprint is the same."""
        text = json.dumps(
            {"recipe": asdict(self), "data": dataset_sha256}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Learner:
    """One fitted learner: its index, the feature columns it reads, the estimator."""

    index: int
    features: npt.NDArray[np.int64]
    estimator: Any


def learner_seed(seed: int, index: int) -> int:
    """The seed of learner ``index``: independent streams per learner, whatever K is."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def learner_draw(
    recipe: LearnerRecipe, index: int, rows: int, n_features: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Learner ``index``'s training rows and (sorted) feature columns."""
    rng = np.random.default_rng(learner_seed(recipe.seed, index))
    features = np.sort(rng.choice(n_features, size=recipe.features_each, replace=False))
    size = max(1, round(recipe.sample_fraction * rows))
    if recipe.bootstrap:
        samples = rng.integers(0, rows, size=size)
    else:
        samples = np.sort(rng.choice(rows, size=size, replace=False))
    return samples.astype(np.int64), features.astype(np.int64)


def fit_learner(data: TrainingData, recipe: LearnerRecipe, index: int) -> Learner:
    """Fit learner ``index``: a pure function of its arguments (the Dask task)."""
    samples, features = learner_draw(recipe, index, data.rows, data.features.shape[1])
    estimator = build_estimator(
        recipe.model_type,
        recipe.params,
        scale=recipe.scale,
        random_state=learner_seed(recipe.seed, index) % 2**31,
    )
    x = data.features[np.ix_(samples, features)]
    y = data.target[samples]
    estimator.fit(x, y)
    if data.n_classes is not None and len(estimator.classes_) != data.n_classes:
        # Soft voting and its ONNX graph need every learner's probabilities over all classes.
        raise InvalidInputError(
            f"learner {index} drew {len(estimator.classes_)} of the {data.n_classes} classes "
            "in its sample; raise ensemble.sample_fraction or set ensemble.bootstrap: false"
        )
    return Learner(index, features, estimator)


def assemble(
    learners: list[Learner],
    recipe: LearnerRecipe,
    *,
    n_features: int,
    rows: int,
    classes: npt.NDArray[Any] | None = None,
) -> BaggingRegressor | BaggingClassifier:
    """One fitted ``Bagging*`` of the learners (in index order): averaging for regression,
    soft voting over ``classes`` for classification."""
    if not learners:
        raise InvalidInputError("an ensemble needs at least one fitted learner")
    ordered = sorted(learners, key=lambda learner: learner.index)
    template = build_estimator(recipe.model_type, recipe.params, scale=recipe.scale, random_state=0)
    options = {
        "estimator": template,
        "n_estimators": len(ordered),
        "max_samples": recipe.sample_fraction,
        "max_features": recipe.features_each,
        "bootstrap": recipe.bootstrap,
        "random_state": recipe.seed,
    }
    from sklearn.ensemble import BaggingClassifier, BaggingRegressor

    bagging: BaggingRegressor | BaggingClassifier
    if classes is None:
        bagging = BaggingRegressor(**options)
    else:
        bagging = BaggingClassifier(**options)
        bagging.classes_ = np.asarray(classes)
        bagging.n_classes_ = len(classes)
    bagging.estimator_ = template
    bagging.estimators_ = [learner.estimator for learner in ordered]
    bagging.estimators_features_ = [learner.features for learner in ordered]
    bagging.n_features_in_ = n_features
    bagging._max_samples = max(1, round(recipe.sample_fraction * rows))
    bagging._max_features = recipe.features_each
    return bagging


@dataclass(frozen=True)
class ClusterOptions:
    """Where an ensemble's learners are fitted: a scheduler's address, or (empty) a local
    cluster of ``workers`` processes."""

    scheduler: str = ""
    workers: int = 2


LearnerListener = Callable[[int, int, int], None]
"""Called with (learners fitted so far, learners failed, learners in all)."""


@dataclass(frozen=True)
class EnsembleOutcome:
    """The assembled ensemble and how its learners came about."""

    estimator: BaggingRegressor | BaggingClassifier
    fitted: int
    failed: int
    resumed: int
    cluster: str


def recipe_of(spec: Spec, n_features: int) -> LearnerRecipe:
    """The learner recipe of a spec with an ``ensemble`` section."""
    ensemble = spec.ensemble
    assert ensemble is not None
    if ensemble.feature_count(n_features) > n_features:
        raise SpecError(
            f"ensemble.features {ensemble.features} is more than the {n_features} features "
            "of the data; give a count up to that or a share such as 0.8"
        )
    return LearnerRecipe(
        model_type=spec.model.type,
        params=dict(spec.model.params),
        scale=spec.model.scale,
        bootstrap=ensemble.bootstrap,
        sample_fraction=ensemble.sample_fraction,
        features_each=ensemble.feature_count(n_features),
        seed=ensemble.seed,
    )


def train_ensemble(
    spec: Spec,
    registry: Registry,
    run_id: str,
    features: npt.NDArray[np.float32],
    target: npt.NDArray[Any],
    *,
    data_id: str,
    cluster: ClusterOptions,
    listener: LearnerListener | None = None,
) -> EnsembleOutcome:
    """Fit the spec's ensemble on the cluster, reusing the learners of ``run_id`` that are
    stored already (a resumed run) and storing each new one as it arrives; assemble them.

    ``data_id`` names the training rows (dataset digest and split), so that a stored
    learner is reused only for the same recipe on the same rows. Fewer fitted learners than
    ``min_learners`` raise ``InvalidInputError``; a lost cluster raises ``ClusterError``."""
    ensemble = spec.ensemble
    assert ensemble is not None
    recipe = recipe_of(spec, features.shape[1])
    fingerprint = recipe.fingerprint(data_id)
    classes: npt.NDArray[Any] | None = None
    data = TrainingData(features, target)
    if spec.task == "classification":
        classes, encoded = np.unique(target, return_inverse=True)
        data = TrainingData(features, encoded.astype(np.int64), n_classes=len(classes))
    total = ensemble.learners
    learners = _stored_learners(registry, run_id, fingerprint, recipe, data, total)
    resumed = len(learners)
    failures: dict[int, BaseException] = {}

    def tell() -> None:
        if listener is not None:
            listener(len(learners), len(failures), total)

    def fitted(index: int, learner: Learner) -> None:
        digest = registry.store.put(skops_dumps(learner.estimator))
        registry.runs.add_learner(run_id, fingerprint, index, digest)
        learners[index] = learner
        tell()

    def failed(index: int, error: BaseException) -> None:
        failures[index] = error
        tell()

    tell()
    missing = [index for index in range(total) if index not in learners]
    with open_cluster(cluster.scheduler, workers=cluster.workers) as client:
        description = cluster_description(client)
        registry.runs.update_params(run_id, {"cluster": description})
        try:
            fit_on_cluster(
                client, fit_learner, data, recipe, missing, on_result=fitted, on_error=failed
            )
        except ClusterError as error:
            raise ClusterError(
                f"{error}: `shipyard pipeline run SPEC --scheduler ADDRESS --resume {run_id}` "
                f"fits only the {total - len(learners)} learners it lacks "
                f"({len(learners)} of {total} are kept)"
            ) from error
    if len(learners) < ensemble.required:
        first = min(failures)
        raise InvalidInputError(
            f"only {len(learners)} of {total} learners fitted, fewer than "
            f"ensemble.min_learners {ensemble.required}; {len(failures)} failed, the first "
            f"(learner {first}) with {type(failures[first]).__name__}: {failures[first]}; "
            "fix model.params or "
            "lower ensemble.min_learners"
        )
    estimator = assemble(
        list(learners.values()),
        recipe,
        n_features=features.shape[1],
        rows=data.rows,
        classes=classes,
    )
    return EnsembleOutcome(estimator, len(learners), len(failures), resumed, description)


def _stored_learners(
    registry: Registry,
    run_id: str,
    fingerprint: str,
    recipe: LearnerRecipe,
    data: TrainingData,
    total: int,
) -> dict[int, Learner]:
    """The learners (of the first ``total``) a failed attempt of this run stored, loaded
    from verified bytes by skops with its trusted types (never unpickled)."""
    learners: dict[int, Learner] = {}
    for index, digest in sorted(registry.runs.learners(run_id, fingerprint).items()):
        if index >= total:  # the spec now asks for fewer learners
            continue
        blob = registry.store.get(digest)  # re-hashed: a modified blob is refused
        estimator = skops_io().loads(blob, trusted=skops_trusted_types(blob))
        _, features = learner_draw(recipe, index, data.rows, data.features.shape[1])
        learners[index] = Learner(index, features, estimator)
    return learners

"""The estimators a spec may name and the metrics it may ask for.

Only listed scikit-learn estimators can be built from a spec: each of them exports to ONNX,
so a spec cannot smuggle in an arbitrary import path. Two short names are for image
pipelines (``task: image_classification``): ``mlp`` (scikit-learn's ``MLPClassifier``, no
extra) and ``cnn`` (``pipeline/vision.py``'s PyTorch network, which needs the image size
and so only image pipelines can train).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn import ensemble, linear_model, metrics, neural_network, tree
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shipyard.data.images import ImageFormat
from shipyard.pipeline.vision import ConvNetClassifier

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class EstimatorInfo:
    """A scikit-learn estimator class and the task it solves."""

    cls: type[Any]
    task: Task
    images_only: bool = False
    """Trains on images only (it needs their size): a spec with task image_classification."""


@dataclass(frozen=True)
class MetricInfo:
    """A metric: its function, its task, and whether it reads scores or hard labels."""

    function: Callable[..., float]
    task: Task
    uses: Literal["score", "label"]
    greater_is_better: bool = True


_ESTIMATOR_CLASSES: list[tuple[type[Any], Task]] = [
    (ensemble.HistGradientBoostingClassifier, "classification"),
    (ensemble.RandomForestClassifier, "classification"),
    (ensemble.ExtraTreesClassifier, "classification"),
    (ensemble.GradientBoostingClassifier, "classification"),
    (linear_model.LogisticRegression, "classification"),
    (tree.DecisionTreeClassifier, "classification"),
    (ensemble.HistGradientBoostingRegressor, "regression"),
    (ensemble.RandomForestRegressor, "regression"),
    (ensemble.ExtraTreesRegressor, "regression"),
    (ensemble.GradientBoostingRegressor, "regression"),
    (linear_model.Ridge, "regression"),
    (linear_model.LinearRegression, "regression"),
    (tree.DecisionTreeRegressor, "regression"),
]
ESTIMATORS: dict[str, EstimatorInfo] = {
    cls.__name__: EstimatorInfo(cls, task) for cls, task in _ESTIMATOR_CLASSES
}
ESTIMATORS["mlp"] = EstimatorInfo(neural_network.MLPClassifier, "classification")
ESTIMATORS["cnn"] = EstimatorInfo(ConvNetClassifier, "classification", images_only=True)


def _rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    return float(np.sqrt(metrics.mean_squared_error(y_true, y_pred)))


def _zero(metric: Callable[..., float]) -> Callable[..., float]:
    """Precision/recall/F1 that count 0/0 as 0 instead of warning (warnings are errors)."""

    def call(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
        return float(metric(y_true, y_pred, zero_division=0))

    return call


METRICS: dict[str, MetricInfo] = {
    "average_precision": MetricInfo(metrics.average_precision_score, "classification", "score"),
    "roc_auc": MetricInfo(metrics.roc_auc_score, "classification", "score"),
    "log_loss": MetricInfo(metrics.log_loss, "classification", "score", greater_is_better=False),
    "accuracy": MetricInfo(metrics.accuracy_score, "classification", "label"),
    "balanced_accuracy": MetricInfo(metrics.balanced_accuracy_score, "classification", "label"),
    "precision": MetricInfo(_zero(metrics.precision_score), "classification", "label"),
    "recall": MetricInfo(_zero(metrics.recall_score), "classification", "label"),
    "f1": MetricInfo(_zero(metrics.f1_score), "classification", "label"),
    "rmse": MetricInfo(_rmse, "regression", "label", greater_is_better=False),
    "mae": MetricInfo(metrics.mean_absolute_error, "regression", "label", greater_is_better=False),
    "r2": MetricInfo(metrics.r2_score, "regression", "label"),
}


def build_estimator(
    type_name: str,
    params: dict[str, Any],
    *,
    scale: bool,
    random_state: int,
    image: ImageFormat | None = None,
) -> Any:
    """Construct the named estimator; ``random_state`` is set explicitly when it takes one,
    and an image model's size from ``image``, the format of its images."""
    cls = ESTIMATORS[type_name].cls
    estimator = cls(**params)
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=random_state)
    if image is not None and "channels" in estimator.get_params():
        estimator.set_params(
            height=image.height,
            width=image.width,
            channels=image.channels,
            max_value=image.max_value,
        )
    if scale:
        return Pipeline([("scale", StandardScaler()), ("model", estimator)])
    return estimator

"""The estimators a spec may name and the metrics it may ask for.

Only listed scikit-learn estimators can be built from a spec: each of them exports to ONNX,
so a spec cannot smuggle in an arbitrary import path. Two short names are for image
pipelines (``task: image_classification``): ``mlp`` (scikit-learn's ``MLPClassifier``, no
extra) and ``cnn`` (``pipeline/vision.py``'s PyTorch network, which needs the image size
and so only image pipelines can train).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from shipyard.data.images import ImageFormat
from shipyard.monitoring.performance import sk_metrics

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class EstimatorInfo:
    """A scikit-learn estimator class (by ``module:Class``, imported when first used: a spec
    is checked by processes, such as the server, that may never train) and its task."""

    path: str
    task: Task
    images_only: bool = False
    """Trains on images only (it needs their size): a spec with task image_classification."""

    @property
    def cls(self) -> type[Any]:
        """The class itself."""
        module, name = self.path.split(":")
        found: type[Any] = getattr(importlib.import_module(module), name)
        return found


@dataclass(frozen=True)
class MetricInfo:
    """A metric: its function (by name in ``sklearn.metrics``, or a callable), its task, and
    whether it reads scores or hard labels."""

    name: str | Callable[..., float]
    task: Task
    uses: Literal["score", "label"]
    greater_is_better: bool = True
    zero_division: bool = False
    """Precision/recall/F1: count 0/0 as 0 instead of warning (warnings are errors)."""

    @property
    def function(self) -> Callable[..., float]:
        """The function, scikit-learn's imported on first use."""
        if callable(self.name):
            return self.name
        function: Callable[..., float] = getattr(sk_metrics(), self.name)
        if not self.zero_division:
            return function

        def call(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
            return float(function(y_true, y_pred, zero_division=0))

        return call


_ESTIMATOR_CLASSES: list[tuple[str, Task]] = [
    ("sklearn.ensemble:HistGradientBoostingClassifier", "classification"),
    ("sklearn.ensemble:RandomForestClassifier", "classification"),
    ("sklearn.ensemble:ExtraTreesClassifier", "classification"),
    ("sklearn.ensemble:GradientBoostingClassifier", "classification"),
    ("sklearn.linear_model:LogisticRegression", "classification"),
    ("sklearn.tree:DecisionTreeClassifier", "classification"),
    ("sklearn.ensemble:HistGradientBoostingRegressor", "regression"),
    ("sklearn.ensemble:RandomForestRegressor", "regression"),
    ("sklearn.ensemble:ExtraTreesRegressor", "regression"),
    ("sklearn.ensemble:GradientBoostingRegressor", "regression"),
    ("sklearn.linear_model:Ridge", "regression"),
    ("sklearn.linear_model:LinearRegression", "regression"),
    ("sklearn.tree:DecisionTreeRegressor", "regression"),
]
ESTIMATORS: dict[str, EstimatorInfo] = {
    path.split(":")[1]: EstimatorInfo(path, task) for path, task in _ESTIMATOR_CLASSES
}
ESTIMATORS["mlp"] = EstimatorInfo("sklearn.neural_network:MLPClassifier", "classification")
ESTIMATORS["cnn"] = EstimatorInfo(
    "shipyard.pipeline.vision:ConvNetClassifier", "classification", images_only=True
)


def _rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    return float(np.sqrt(sk_metrics().mean_squared_error(y_true, y_pred)))


METRICS: dict[str, MetricInfo] = {
    "average_precision": MetricInfo("average_precision_score", "classification", "score"),
    "roc_auc": MetricInfo("roc_auc_score", "classification", "score"),
    "log_loss": MetricInfo("log_loss", "classification", "score", greater_is_better=False),
    "accuracy": MetricInfo("accuracy_score", "classification", "label"),
    "balanced_accuracy": MetricInfo("balanced_accuracy_score", "classification", "label"),
    "precision": MetricInfo("precision_score", "classification", "label", zero_division=True),
    "recall": MetricInfo("recall_score", "classification", "label", zero_division=True),
    "f1": MetricInfo("f1_score", "classification", "label", zero_division=True),
    "rmse": MetricInfo(_rmse, "regression", "label", greater_is_better=False),
    "mae": MetricInfo("mean_absolute_error", "regression", "label", greater_is_better=False),
    "r2": MetricInfo("r2_score", "regression", "label"),
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
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("scale", StandardScaler()), ("model", estimator)])
    return estimator

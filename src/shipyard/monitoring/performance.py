"""Live performance of a model version on its labelled predictions, with ``sklearn.metrics``.

Labels are text, as the prediction log and the feedback store keep them ("0"/"1" for int
and bool classes, the repr of a float for regression). A binary classifier's positive class
is the version's second class (``output_schema["classes"][1]``), the class its score is the
probability of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn import metrics

from shipyard.monitoring.feedback import label_text

Task = Literal["classification", "regression"]

#: The metrics the monitor computes live, and whether greater is better.
LIVE_METRICS: dict[str, bool] = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "average_precision": True,
    "brier": False,
    "mae": False,
    "rmse": False,
    "r2": True,
}
CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "brier")
REGRESSION = ("mae", "rmse", "r2")
#: The metric a degradation is judged on when the spec names none: the first of these the
#: version also has offline.
PREFERRED = ("average_precision", "roc_auc", "f1", "accuracy", "rmse", "mae", "r2")


@dataclass(frozen=True)
class TaskInfo:
    """What the metrics need to know about a version: its task and classes as text."""

    task: Task
    classes: tuple[str, ...] = ()

    @classmethod
    def from_output_schema(cls, schema: Mapping[str, Any]) -> TaskInfo:
        """The task and classes a registered version's output schema records."""
        task: Task = "regression" if schema.get("task") == "regression" else "classification"
        return cls(task, tuple(label_text(c) for c in schema.get("classes", [])))

    @property
    def positive(self) -> str | None:
        """The class a binary classifier's score is the probability of."""
        return self.classes[1] if self.task == "classification" and len(self.classes) == 2 else None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics that apply to this task."""
        return REGRESSION if self.task == "regression" else CLASSIFICATION


def live_metrics(
    info: TaskInfo,
    truth: Sequence[str],
    scores: npt.NDArray[np.float64],
    predicted: Sequence[str | None],
) -> dict[str, float]:
    """The task's metrics over labelled rows (``truth`` as text, the model's ``scores`` and
    predicted labels); a metric that is undefined on these rows (one class only, too few
    rows) is left out rather than reported as NaN."""
    if len(truth) == 0:
        return {}
    if info.task == "regression":
        return _regression(np.asarray([_number(t) for t in truth]), scores)
    return _classification(info, np.asarray(truth, dtype=object), scores, predicted)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # the store validated labels; a stray one is left out, not fatal
        return math.nan


def _regression(
    truth: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]
) -> dict[str, float]:
    keep = np.isfinite(truth) & np.isfinite(predicted)
    truth, predicted = truth[keep], predicted[keep]
    if truth.size == 0:
        return {}
    result = {
        "mae": float(metrics.mean_absolute_error(truth, predicted)),
        "rmse": float(math.sqrt(metrics.mean_squared_error(truth, predicted))),
    }
    if truth.size >= 2 and np.ptp(truth) > 0:  # R² is undefined on constant truth
        result["r2"] = float(metrics.r2_score(truth, predicted))
    return result


def _classification(
    info: TaskInfo,
    truth: npt.NDArray[Any],
    scores: npt.NDArray[np.float64],
    predicted: Sequence[str | None],
) -> dict[str, float]:
    labels = np.asarray(["" if p is None else p for p in predicted], dtype=object)
    result = {"accuracy": float(metrics.accuracy_score(truth, labels))}
    positive = info.positive
    if positive is None:  # multiclass: macro averages over the classes seen
        for name, function in _LABEL_METRICS.items():
            result[name] = float(function(truth, labels, average="macro", zero_division=0))
        return result
    y_true = truth == positive
    y_pred = labels == positive
    for name, function in _LABEL_METRICS.items():
        result[name] = float(function(y_true, y_pred, zero_division=0))
    finite = np.isfinite(scores)
    if finite.all() and y_true.any() and not y_true.all():
        result["roc_auc"] = float(metrics.roc_auc_score(y_true, scores))
        result["average_precision"] = float(metrics.average_precision_score(y_true, scores))
    if finite.all():
        result["brier"] = float(metrics.brier_score_loss(y_true, np.clip(scores, 0.0, 1.0)))
    return result


_LABEL_METRICS = {
    "precision": metrics.precision_score,
    "recall": metrics.recall_score,
    "f1": metrics.f1_score,
}


def delay_quantiles(delays_s: npt.NDArray[np.float64]) -> dict[str, float] | None:
    """p50 and p90 of label delays in seconds (feedback received − prediction time)."""
    if delays_s.size == 0:
        return None
    p50, p90 = np.quantile(delays_s, [0.5, 0.9])
    return {"p50_s": float(p50), "p90_s": float(p90)}


def judgeable(info: TaskInfo, truth: Sequence[str], min_labelled: int, min_per_class: int) -> bool:
    """Whether labelled rows are enough evidence to judge a window: ``min_labelled`` rows,
    and for a classifier ``min_per_class`` of each of its classes (AP or ROC AUC over two
    frauds swings from 0 to 1 by chance)."""
    if len(truth) < min_labelled:
        return False
    if info.task == "regression":
        return True
    classes = info.classes or tuple(sorted(set(truth)))
    present = {c: 0 for c in classes}
    for label in truth:
        if label in present:
            present[label] += 1
    return len(present) >= 2 and min(present.values()) >= min_per_class


def primary_metric(info: TaskInfo, offline: Mapping[str, float], wanted: str | None) -> str | None:
    """The metric a degradation is judged on: ``wanted`` when it applies to the task, else
    the first preferred metric the version has offline; None when none is comparable."""
    if wanted is not None:
        return wanted if wanted in info.metric_names else None
    return next((m for m in PREFERRED if m in info.metric_names and m in offline), None)


def degraded(metric: str, live: float, offline: float, margin: float) -> bool:
    """Whether ``live`` is worse than ``offline`` by more than ``margin`` (absolute)."""
    if LIVE_METRICS[metric]:
        return live < offline - margin
    return live > offline + margin

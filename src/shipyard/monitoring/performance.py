"""Live performance of a model version on its labelled predictions, with ``sklearn.metrics``.

Labels are text, as the prediction log and the feedback store keep them ("0"/"1" for int
and bool classes, the repr of a float for regression). A binary classifier's positive class
is the version's second class (``output_schema["classes"][1]``), the class its score is the
probability of.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

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
        "mae": float(sk_metrics().mean_absolute_error(truth, predicted)),
        "rmse": float(math.sqrt(sk_metrics().mean_squared_error(truth, predicted))),
    }
    if truth.size >= 2 and np.ptp(truth) > 0:  # R² is undefined on constant truth
        result["r2"] = float(sk_metrics().r2_score(truth, predicted))
    return result


def _classification(
    info: TaskInfo,
    truth: npt.NDArray[Any],
    scores: npt.NDArray[np.float64],
    predicted: Sequence[str | None],
) -> dict[str, float]:
    labels = np.asarray(["" if p is None else p for p in predicted], dtype=object)
    result = {"accuracy": float(sk_metrics().accuracy_score(truth, labels))}
    positive = info.positive
    if positive is None:  # multiclass: macro averages over the classes seen
        for name, function in _LABEL_METRICS.items():
            score = getattr(sk_metrics(), function)
            result[name] = float(score(truth, labels, average="macro", zero_division=0))
        return result
    y_true = truth == positive
    y_pred = labels == positive
    for name, function in _LABEL_METRICS.items():
        result[name] = float(getattr(sk_metrics(), function)(y_true, y_pred, zero_division=0))
    finite = np.isfinite(scores)
    if finite.all() and y_true.any() and not y_true.all():
        result["roc_auc"] = float(sk_metrics().roc_auc_score(y_true, scores))
        result["average_precision"] = float(sk_metrics().average_precision_score(y_true, scores))
    if finite.all():
        result["brier"] = float(sk_metrics().brier_score_loss(y_true, np.clip(scores, 0.0, 1.0)))
    return result


_LABEL_METRICS = {"precision": "precision_score", "recall": "recall_score", "f1": "f1_score"}


def sk_metrics() -> Any:
    """``sklearn.metrics``, imported on first use: importing scikit-learn takes about a
    second, which a server that only predicts need not spend at start."""
    from sklearn import metrics

    return metrics


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


#: Labelled (score, truth, delay) rows the ranking metrics and delays of "all" keep at most.
RANKED_ROWS = 10_000


class Cumulative:
    """The metrics over every labelled prediction of a version, added one label at a time.

    Exact from sums: accuracy, precision, recall and F1 (the counts of each (truth,
    predicted) pair), Brier (a sum of squares), MAE, RMSE and R² (sums of errors and
    Welford's mean and spread of the truth). ROC AUC, average precision and the label delays
    need every row: they are computed on a uniform reservoir of at most ``capacity`` rows
    (algorithm R) — every row up to ``capacity``, ``sampled`` beyond. ``state`` and
    ``from_state`` carry it across a restart; ``through_seq`` is the newest feedback
    ``seq`` it holds.
    """

    def __init__(self, info: TaskInfo, capacity: int = RANKED_ROWS, seed: int = 0) -> None:
        self.info = info
        self.capacity = capacity
        self.labelled = 0
        self.through_seq = 0
        self.pairs: dict[tuple[str, str], int] = {}
        self.nonfinite = 0  # labelled rows whose score is not a number
        self.brier_sum = 0.0
        self.errors = [0, 0.0, 0.0]  # regression: rows, Σ|e|, Σe²
        self.truth = [0.0, 0.0, math.inf, -math.inf]  # Welford mean, M2; min; max
        self._size = 0
        self._scores = np.empty(0, dtype=np.float64)
        self._positive = np.empty(0, dtype=np.bool_)
        self._delays = np.empty(0, dtype=np.float64)
        self._rng = np.random.default_rng(seed)

    @property
    def sampled(self) -> bool:
        """Whether the ranking metrics and delays are over a sample of the labelled rows."""
        return self.labelled > self.capacity

    def add(
        self, truth: str, score: float, predicted: str | None, delay_s: float, seq: int
    ) -> None:
        """One labelled prediction."""
        self.labelled += 1
        self.through_seq = max(self.through_seq, seq)
        finite = math.isfinite(score)
        if self.info.task == "regression":
            value = _number(truth)
            if finite and math.isfinite(value):
                self._regression(value, score)
        else:
            pair = (truth, "" if predicted is None else predicted)
            self.pairs[pair] = self.pairs.get(pair, 0) + 1
            if not finite:
                self.nonfinite += 1
            elif self.info.positive is not None:
                hit = float(truth == self.info.positive)
                self.brier_sum += (min(max(score, 0.0), 1.0) - hit) ** 2
        self._keep(score, truth == self.info.positive, delay_s)

    def _regression(self, value: float, predicted: float) -> None:
        error = predicted - value
        self.errors[0] += 1
        self.errors[1] += abs(error)
        self.errors[2] += error * error
        n = self.errors[0]
        mean, spread, low, high = self.truth
        delta = value - mean
        mean += delta / n
        self.truth = [mean, spread + delta * (value - mean), min(low, value), max(high, value)]

    def _keep(self, score: float, positive: bool, delay_s: float) -> None:
        size = len(self.scores)
        if size < self.capacity:
            if size == len(self._scores):  # grow the buffers by doubling, up to capacity
                grown = min(self.capacity, max(64, 2 * size))
                self._scores = np.resize(self._scores, grown)
                self._positive = np.resize(self._positive, grown)
                self._delays = np.resize(self._delays, grown)
            self._scores[size], self._positive[size], self._delays[size] = score, positive, delay_s
            self._size = size + 1
            return
        slot = int(self._rng.integers(0, self.labelled))
        if slot < self.capacity:
            self._scores[slot], self._positive[slot], self._delays[slot] = score, positive, delay_s

    @property
    def scores(self) -> npt.NDArray[np.float64]:
        """The reservoir's scores."""
        return self._scores[: self._size]

    @property
    def positive(self) -> npt.NDArray[np.bool_]:
        """Whether each reservoir row's truth is the positive class."""
        return self._positive[: self._size]

    @property
    def delays(self) -> npt.NDArray[np.float64]:
        """The reservoir's label delays in seconds."""
        return self._delays[: self._size]

    def metrics(self) -> dict[str, float]:
        """The task's metrics, as ``live_metrics`` gives them over the same rows."""
        if self.labelled == 0:
            return {}
        if self.info.task == "regression":
            return self._regression_metrics()
        n = sum(self.pairs.values())
        result = {"accuracy": sum(c for (t, p), c in self.pairs.items() if t == p) / n}
        positive = self.info.positive
        if positive is None:  # macro averages over the labels seen, as sklearn's
            labels = sorted({t for t, _ in self.pairs} | {p for _, p in self.pairs})
            scores = [self._label_scores(lambda x, label=label: x == label) for label in labels]
            for i, name in enumerate(("precision", "recall", "f1")):
                result[name] = float(np.mean([s[i] for s in scores]))
            return result
        precision, recall, f1 = self._label_scores(lambda x: x == positive)
        result |= {"precision": precision, "recall": recall, "f1": f1}
        if self.nonfinite == 0:
            result["brier"] = self.brier_sum / n
            if self.positive.any() and not self.positive.all():
                result["roc_auc"] = float(sk_metrics().roc_auc_score(self.positive, self.scores))
                result["average_precision"] = float(
                    sk_metrics().average_precision_score(self.positive, self.scores)
                )
        return result

    def _label_scores(self, chosen: Any) -> tuple[float, float, float]:
        tp = fp = fn = 0
        for (truth, predicted), count in self.pairs.items():
            t, p = chosen(truth), chosen(predicted)
            tp += count if t and p else 0
            fp += count if p and not t else 0
            fn += count if t and not p else 0
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        return precision, recall, f1

    def _regression_metrics(self) -> dict[str, float]:
        n, absolute, squared = self.errors
        if n == 0:
            return {}
        result = {"mae": absolute / n, "rmse": math.sqrt(squared / n)}
        _, spread, low, high = self.truth
        if n >= 2 and high > low and spread > 0:
            result["r2"] = 1.0 - squared / spread
        return result

    def delay(self) -> dict[str, float] | None:
        """Label delay quantiles (over the reservoir)."""
        return delay_quantiles(self.delays)

    def state(self) -> dict[str, Any]:
        """Everything ``from_state`` needs, as JSON."""
        return {
            "labelled": self.labelled,
            "through_seq": self.through_seq,
            "pairs": [[t, p, c] for (t, p), c in sorted(self.pairs.items())],
            "nonfinite": self.nonfinite,
            "brier_sum": self.brier_sum,
            "errors": list(self.errors),
            "truth": [v if math.isfinite(v) else None for v in self.truth],
            "scores": _packed(self.scores),
            "positive": _packed(np.packbits(self.positive)),
            "delays": _packed(self.delays),
        }

    @classmethod
    def from_state(
        cls, info: TaskInfo, state: Mapping[str, Any], capacity: int = RANKED_ROWS
    ) -> Cumulative:
        """The statistics ``state`` saved (a reservoir larger than ``capacity`` is cut)."""
        totals = cls(info, capacity)
        totals.labelled = int(state["labelled"])
        totals.through_seq = int(state["through_seq"])
        totals.pairs = {(str(t), str(p)): int(c) for t, p, c in state["pairs"]}
        totals.nonfinite = int(state["nonfinite"])
        totals.brier_sum = float(state["brier_sum"])
        count, absolute, squared = state["errors"]
        totals.errors = [int(count), float(absolute), float(squared)]
        mean, spread, low, high = state["truth"]
        totals.truth = [
            float(mean),
            float(spread),
            math.inf if low is None else float(low),
            -math.inf if high is None else float(high),
        ]
        scores = _unpacked(state["scores"], np.float64)
        size = min(len(scores), capacity)
        positive = np.unpackbits(_unpacked(state["positive"], np.uint8), count=len(scores))
        totals._size = size
        totals._scores = scores[:size].copy()
        totals._positive = positive[:size].astype(np.bool_)
        totals._delays = _unpacked(state["delays"], np.float64)[:size].copy()
        return totals


def _packed(values: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(values).tobytes()).decode("ascii")


def _unpacked(text: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)

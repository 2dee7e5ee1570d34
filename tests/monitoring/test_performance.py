"""Live metrics are sklearn.metrics on the same labelled rows."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from sklearn import metrics

from shipyard.monitoring.performance import (
    CLASSIFICATION,
    Cumulative,
    TaskInfo,
    degraded,
    delay_quantiles,
    judgeable,
    live_metrics,
    primary_metric,
)

BINARY = TaskInfo.from_output_schema({"task": "classification", "classes": [0, 1]})


def test_binary_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth_int = rng.integers(0, 2, 500)
    scores = np.clip(truth_int * 0.3 + rng.random(500) * 0.7, 0, 1)
    predicted_int = (scores >= 0.5).astype(int)
    truth = [str(t) for t in truth_int]
    predicted = [str(p) for p in predicted_int]
    live = live_metrics(BINARY, truth, scores, predicted)
    assert live == {
        "accuracy": pytest.approx(metrics.accuracy_score(truth_int, predicted_int), abs=0),
        "precision": pytest.approx(metrics.precision_score(truth_int, predicted_int), abs=0),
        "recall": pytest.approx(metrics.recall_score(truth_int, predicted_int), abs=0),
        "f1": pytest.approx(metrics.f1_score(truth_int, predicted_int), abs=0),
        "roc_auc": pytest.approx(metrics.roc_auc_score(truth_int, scores), abs=0),
        "average_precision": pytest.approx(
            metrics.average_precision_score(truth_int, scores), abs=0
        ),
        "brier": pytest.approx(metrics.brier_score_loss(truth_int, scores), abs=0),
    }


def test_ranking_metrics_need_both_classes() -> None:
    live = live_metrics(BINARY, ["1", "1"], np.array([0.9, 0.2]), ["1", "0"])
    assert "roc_auc" not in live
    assert "average_precision" not in live
    assert live["accuracy"] == 0.5
    assert live["recall"] == 0.5


def test_string_classes_use_the_second_as_positive() -> None:
    info = TaskInfo.from_output_schema({"task": "classification", "classes": ["fraud", "legit"]})
    assert info.positive == "legit"
    live = live_metrics(info, ["legit", "fraud"], np.array([0.8, 0.3]), ["legit", "fraud"])
    assert live["roc_auc"] == 1.0
    assert live["precision"] == 1.0


def test_regression_metrics_equal_sklearn() -> None:
    info = TaskInfo.from_output_schema({"task": "regression"})
    truth = np.array([1.0, 2.5, 3.0, 7.0])
    predicted = np.array([1.5, 2.0, 3.5, 6.0])
    live = live_metrics(info, [repr(float(t)) for t in truth], predicted, [None] * 4)
    assert live["mae"] == pytest.approx(metrics.mean_absolute_error(truth, predicted))
    assert live["rmse"] == pytest.approx(math.sqrt(metrics.mean_squared_error(truth, predicted)))
    assert live["r2"] == pytest.approx(metrics.r2_score(truth, predicted))
    assert "r2" not in live_metrics(info, ["1.0"], np.array([2.0]), [None])


def test_multiclass_uses_macro_averages() -> None:
    info = TaskInfo.from_output_schema({"task": "classification", "classes": [0, 1, 2]})
    truth, predicted = ["0", "1", "2", "2"], ["0", "2", "2", "2"]
    live = live_metrics(info, truth, np.array([0.9, 0.5, 0.6, 0.7]), predicted)
    assert live["f1"] == pytest.approx(
        metrics.f1_score(truth, predicted, average="macro", zero_division=0)
    )
    assert "roc_auc" not in live


def test_nothing_labelled_gives_no_metric() -> None:
    assert live_metrics(BINARY, [], np.array([]), []) == {}
    assert delay_quantiles(np.array([])) is None
    assert delay_quantiles(np.array([1.0, 2.0, 3.0])) == {"p50_s": 2.0, "p90_s": 2.8}


def test_primary_metric_and_degradation() -> None:
    assert primary_metric(BINARY, {"roc_auc": 0.9, "average_precision": 0.8}, None) == (
        "average_precision"
    )
    assert primary_metric(BINARY, {"roc_auc": 0.9}, None) == "roc_auc"
    assert primary_metric(BINARY, {}, "f1") == "f1"
    assert primary_metric(BINARY, {}, "rmse") is None  # not a classification metric
    assert degraded("average_precision", 0.7, 0.8, 0.05)
    assert not degraded("average_precision", 0.76, 0.8, 0.05)
    assert degraded("rmse", 1.2, 1.0, 0.1)
    assert not degraded("rmse", 0.5, 1.0, 0.1)


def test_a_window_is_judged_only_with_enough_of_each_class() -> None:
    binary = TaskInfo("classification", ("0", "1"))
    two_frauds = ["0"] * 498 + ["1"] * 2
    assert not judgeable(binary, two_frauds, min_labelled=100, min_per_class=10)
    assert judgeable(binary, ["0"] * 490 + ["1"] * 10, min_labelled=100, min_per_class=10)
    assert not judgeable(binary, ["0"] * 50 + ["1"] * 40, min_labelled=100, min_per_class=10)
    assert not judgeable(binary, ["0"] * 500, min_labelled=100, min_per_class=1)
    regression = TaskInfo("regression")
    assert judgeable(regression, ["1.5"] * 100, min_labelled=100, min_per_class=10)


def cumulative(
    info: TaskInfo, truth: list[str], scores: Any, predicted: list[Any], **options: Any
) -> Cumulative:
    """The statistics of these labelled rows, added one at a time (delay i s, seq i + 1)."""
    totals = Cumulative(info, **options)
    for i, (t, s, p) in enumerate(zip(truth, scores.tolist(), predicted, strict=True)):
        totals.add(t, s, p, float(i), seq=i + 1)
    return totals


def test_cumulative_metrics_equal_sklearn_and_survive_a_restart() -> None:
    rng = np.random.default_rng(3)
    binary = TaskInfo("classification", ("0", "1"))
    scores = rng.random(3_000)
    truth = [str(int(x)) for x in rng.random(3_000) < scores]
    predicted = [str(int(s >= 0.5)) if i % 50 else None for i, s in enumerate(scores)]
    totals = cumulative(binary, truth, scores, predicted)
    expected = live_metrics(binary, truth, scores, predicted)
    assert totals.metrics() == pytest.approx(expected)
    assert set(expected) == set(CLASSIFICATION)
    assert not totals.sampled
    assert totals.delay() == pytest.approx({"p50_s": 1499.5, "p90_s": 2699.1})
    restored = Cumulative.from_state(binary, json.loads(json.dumps(totals.state())))
    assert restored.metrics() == pytest.approx(expected)
    assert restored.through_seq == 3_000
    restored.add("1", 0.9, "1", 0.0, seq=3_001)  # and goes on where it stopped
    totals.add("1", 0.9, "1", 0.0, seq=3_001)
    assert restored.metrics() == pytest.approx(totals.metrics())

    multi = TaskInfo("classification", ("a", "b", "c"))
    truth = rng.choice(["a", "b", "c"], 500).tolist()
    predicted = rng.choice(["a", "b", "c", None], 500).tolist()
    unused = rng.random(500)  # a multiclass model's score is not ranked
    totals = cumulative(multi, truth, unused, predicted)
    assert totals.metrics() == pytest.approx(live_metrics(multi, truth, unused, predicted))

    regression = TaskInfo("regression")
    y = rng.normal(1_000.0, 5.0, 800)
    guess = y + rng.normal(0.0, 2.0, 800)
    truth = [repr(float(v)) for v in y]
    totals = cumulative(regression, truth, guess, [None] * 800)
    assert totals.metrics() == pytest.approx(live_metrics(regression, truth, guess, [None] * 800))
    restored = Cumulative.from_state(regression, json.loads(json.dumps(totals.state())))
    assert restored.metrics() == pytest.approx(totals.metrics())


def test_cumulative_ranking_metrics_beyond_capacity_are_on_a_uniform_sample() -> None:
    rng = np.random.default_rng(4)
    binary = TaskInfo("classification", ("0", "1"))
    scores = rng.random(20_000)
    truth = [str(int(x)) for x in rng.random(20_000) < scores]
    predicted = [str(int(s >= 0.5)) for s in scores]
    totals = cumulative(binary, truth, scores, predicted, capacity=2_000)
    assert totals.sampled
    assert len(totals.scores) == 2_000
    exact = live_metrics(binary, truth, scores, predicted)
    got = totals.metrics()
    for name in ("accuracy", "precision", "recall", "f1", "brier"):  # exact from counts
        assert got[name] == pytest.approx(exact[name])
    assert got["roc_auc"] == pytest.approx(exact["roc_auc"], abs=0.03)
    assert got["average_precision"] == pytest.approx(exact["average_precision"], abs=0.03)

"""``shipyard demo``: the figures of its batch and comparison steps."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from shipyard.cli.demo.scoring import label_metrics


def test_label_metrics_against_the_labels() -> None:
    truth = pd.Series([1, 1, 0, 0, 0])
    probability = pd.Series([0.9, 0.2, 0.6, 0.1, 0.0])
    metrics = label_metrics(truth, probability, (probability >= 0.5).astype(int))
    assert (metrics.rows, metrics.positives, metrics.flagged) == (5, 2, 2)
    assert (metrics.precision, metrics.recall) == (0.5, 0.5)
    assert metrics.average_precision == pytest.approx(average_precision_score(truth, probability))
    assert metrics.roc_auc == pytest.approx(5 / 6)  # fraud above legitimate in 5 of 6 pairs


def test_label_metrics_say_none_where_the_file_cannot_tell() -> None:
    """No fraud row: no recall, no ranking metric (scikit-learn would warn or raise);
    nothing flagged: no precision."""
    metrics = label_metrics(pd.Series([0, 0]), pd.Series([0.1, 0.2]), pd.Series([0, 0]))
    assert (metrics.precision, metrics.recall) == (None, None)
    assert (metrics.average_precision, metrics.roc_auc) == (None, None)

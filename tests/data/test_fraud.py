from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from shipyard.data import DATASETS, FRAUD_SCHEMA, generate_fraud, get_dataset
from shipyard.errors import InvalidInputError


def test_same_seed_same_table() -> None:
    pd.testing.assert_frame_equal(generate_fraud(2_000, seed=3), generate_fraud(2_000, seed=3))


def test_other_seed_other_table() -> None:
    assert not generate_fraud(2_000, seed=3).equals(generate_fraud(2_000, seed=4))


def test_table_matches_the_schema() -> None:
    frame = generate_fraud(5_000, seed=1)
    assert list(frame.columns) == FRAUD_SCHEMA.names
    pd.testing.assert_frame_equal(FRAUD_SCHEMA.validate_frame(frame), frame)


def test_columns_look_like_card_transactions() -> None:
    frame = generate_fraud(20_000, seed=2)
    assert frame["Time"].is_monotonic_increasing
    assert frame["Time"].min() >= 0
    assert frame["Time"].max() < 2 * 24 * 3600
    assert (frame["Amount"] > 0).all()
    assert (frame["Amount"].round(2) == frame["Amount"]).all()
    normal = frame[frame["Class"] == 0]
    for name in ("V1", "V14", "V28"):
        assert abs(normal[name].mean()) < 0.1
    # PCA-like: earlier components spread wider.
    assert normal["V1"].std() > normal["V28"].std() * 2


@pytest.mark.parametrize("rate", [0.002, 0.005, 0.01])
def test_fraud_rate(rate: float) -> None:
    frame = generate_fraud(50_000, seed=0, fraud_rate=rate)
    assert frame["Class"].mean() == pytest.approx(rate, rel=0.01)
    assert set(frame["Class"].unique()) == {0, 1}


def test_fraud_differs_in_a_subset_of_features() -> None:
    frame = generate_fraud(50_000, seed=5)
    means = frame.groupby("Class").mean()
    stds = frame[frame["Class"] == 0].std()
    gap = ((means.loc[1] - means.loc[0]) / stds).abs()
    assert gap["V14"] > 2
    assert gap["V12"] > 2
    assert gap[["V1", "V2", "V5", "V20", "V28"]].max() < 0.5


def test_a_model_finds_most_fraud_but_not_all() -> None:
    frame = generate_fraud(40_000, seed=0)
    features = frame[FRAUD_SCHEMA.feature_names].to_numpy(dtype=np.float32)
    target = frame["Class"].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.25, stratify=target, random_state=42
    )
    # Regularised like examples/fraud/pipeline.yaml: unregularised boosting is unstable at
    # 0.5% positives (it stops early after overshooting on pure-fraud leaves).
    model = HistGradientBoostingClassifier(
        max_iter=100, l2_regularization=1.0, early_stopping=False, random_state=0
    ).fit(x_train, y_train)
    scores = model.predict_proba(x_test)[:, 1]
    assert 0.5 < average_precision_score(y_test, scores) < 0.98
    assert roc_auc_score(y_test, scores) > 0.93


@pytest.mark.parametrize("rows", [0, -5, 2.5, True])
def test_rows_must_be_a_positive_whole_number(rows: int) -> None:
    with pytest.raises(InvalidInputError, match="rows must be a whole number of at least 1"):
        generate_fraud(rows)


@pytest.mark.parametrize("rate", [0.0, -0.1, 0.5, 0.9])
def test_fraud_rate_must_be_between_0_and_half(rate: float) -> None:
    with pytest.raises(InvalidInputError, match=r"fraud_rate must be between 0 and 0\.5"):
        generate_fraud(100, fraud_rate=rate)


def test_one_row() -> None:
    assert len(generate_fraud(1)) == 1


def test_catalogue_generates_fraud() -> None:
    dataset = get_dataset("fraud")
    assert dataset is DATASETS["fraud"]
    assert dataset.schema == FRAUD_SCHEMA
    pd.testing.assert_frame_equal(dataset.generate(500, 9), generate_fraud(500, seed=9))


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInputError, match="unknown dataset 'iris'; known datasets: fraud"):
        get_dataset("iris")

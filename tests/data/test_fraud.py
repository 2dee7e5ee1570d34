from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

from shipyard.data import (
    DATASETS,
    DRIFT_SCENARIOS,
    FRAUD_SCHEMA,
    drift_fraud,
    drifted_features,
    generate_fraud,
    get_dataset,
)
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


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_fraud(30_000, seed=6)


def _moved(base: pd.DataFrame, drifted: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per feature: mean shift in base standard deviations, and the ratio of spreads."""
    features = FRAUD_SCHEMA.feature_names
    std = base[features].std()
    return (drifted[features].mean() - base[features].mean()).abs() / std, drifted[
        features
    ].std() / std


@pytest.mark.parametrize(
    ("scenario", "count", "shift", "spread"),
    [
        ("mean-shift", 9, 0.5, 1.0),
        ("variance", 9, 0.0, 1.5),
        ("few", 2, 2.0, 1.0),
        ("many", 23, 0.5, 1.0),
    ],
)
def test_covariate_drift_moves_only_the_features_it_names(
    base: pd.DataFrame, scenario: str, count: int, shift: float, spread: float
) -> None:
    drifted = drift_fraud(base, scenario, seed=6)
    moved = drifted_features(scenario)
    assert len(moved) == count
    assert "Time" not in moved
    mean_gap, spread_ratio = _moved(base, drifted)
    components = [name for name in moved if name != "Amount"]
    # Amount moves in log space: its raw mean and spread move further than the components'.
    assert mean_gap[components].to_numpy() == pytest.approx(shift, abs=0.01)
    assert spread_ratio[components].to_numpy() == pytest.approx(spread, abs=0.01)
    still = [name for name in FRAUD_SCHEMA.feature_names if name not in moved]
    assert mean_gap[still].max() == 0.0
    assert spread_ratio[still].to_numpy() == pytest.approx(1.0)
    pd.testing.assert_series_equal(drifted["Class"], base["Class"])


def test_strength_and_share_are_options(base: pd.DataFrame) -> None:
    drifted = drift_fraud(base, "mean-shift", strength=1.0, share=0.5, seed=6)
    moved = drifted_features("mean-shift", 0.5)
    assert len(moved) == 14  # of the 29 that can drift (Time does not)
    mean_gap, _ = _moved(base, drifted)
    components = [name for name in moved if name != "Amount"]
    assert mean_gap[components].to_numpy() == pytest.approx(1.0, abs=0.01)


def test_drift_is_reproducible_by_seed(base: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        drift_fraud(base, "many", seed=3), drift_fraud(base, "many", seed=3)
    )
    assert not drift_fraud(base, "concept", seed=3).equals(drift_fraud(base, "concept", seed=4))


def test_amount_stays_positive_in_cents(base: pd.DataFrame) -> None:
    for scenario in ("variance", "many"):
        amount = drift_fraud(base, scenario, strength=3.0, share=1.0)["Amount"]
        assert (amount >= 0.01).all()
        assert (amount.round(2) == amount).all()


def test_concept_drift_keeps_features_and_hides_new_fraud_from_the_model(
    base: pd.DataFrame,
) -> None:
    features = FRAUD_SCHEMA.feature_names
    model = HistGradientBoostingClassifier(
        max_iter=60, l2_regularization=1.0, early_stopping=False, random_state=0
    ).fit(base[features].to_numpy(np.float32), base["Class"])
    live = generate_fraud(20_000, seed=7)
    drifted = drift_fraud(live, "concept", seed=7)
    pd.testing.assert_frame_equal(drifted[features], live[features])
    assert drifted["Class"].mean() == pytest.approx(live["Class"].mean() + 0.02, abs=0.003)

    def recall(frame: pd.DataFrame) -> float:
        predicted = model.predict(frame[features].to_numpy(np.float32))
        return float(recall_score(frame["Class"], predicted))

    assert recall(live) > 0.5
    assert recall(drifted) < recall(live) / 3


def test_new_fraud_moves_the_features_of_many_and_adds_fraud_a_retrained_model_learns(
    base: pd.DataFrame,
) -> None:
    """``new-fraud`` shifts what ``many`` shifts and makes the V2-and-V9-high corner fraud:
    the model of the old world misses it; one trained on labelled drifted rows (fewer than
    the demo's loop gathers) catches it, on drifted rows it did not train on."""
    features = FRAUD_SCHEMA.feature_names
    live = generate_fraud(20_000, seed=7)
    drifted = drift_fraud(live, "new-fraud", seed=7)
    many = drift_fraud(live, "many", seed=7)
    assert drifted_features("new-fraud") == drifted_features("many")
    pd.testing.assert_frame_equal(drifted[features], many[features])
    new = (drifted["Class"] == 1) & (live["Class"] == 0)
    assert new.mean() == pytest.approx(0.03, abs=0.005)
    corner = drifted.loc[new, ["V2", "V9"]]
    assert (corner.min() > drifted[["V2", "V9"]].median()).all()
    assert (drifted["Class"] >= live["Class"]).all()  # no fraud is lost

    old = HistGradientBoostingClassifier(max_iter=60, early_stopping=False, random_state=0)
    old.fit(base[features], base["Class"])
    learned, unseen = drifted.iloc[:1500], drifted.iloc[-600:]
    retrained = HistGradientBoostingClassifier(max_iter=60, early_stopping=False, random_state=0)
    retrained.fit(learned[features], learned["Class"])

    def ap(model: HistGradientBoostingClassifier) -> float:
        scores = model.predict_proba(unseen[features])[:, 1]
        return float(average_precision_score(unseen["Class"], scores))

    assert ap(old) < 0.5
    assert ap(retrained) > ap(old) + 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "tilt"}, r"unknown drift scenario 'tilt'; use one of mean-shift, variance"),
        ({"scenario": "few", "strength": 0.0}, r"drift strength must be a positive number"),
        ({"scenario": "many", "share": 1.5}, r"drift share of features must be in \(0, 1\]"),
        ({"scenario": "concept", "strength": 0.6}, r"rate of new fraud rows, below 0\.5"),
    ],
)
def test_bad_drift_arguments(base: pd.DataFrame, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        drift_fraud(base.head(100), **kwargs)


def test_catalogue_knows_the_drift_scenarios() -> None:
    dataset = get_dataset("fraud")
    assert dataset.drift is not None
    assert set(dataset.drift_scenarios) == set(DRIFT_SCENARIOS)

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shipyard.data import FRAUD_SCHEMA, Column, TableSchema, generate_fraud, profile_frame
from shipyard.data.profile import SKETCH_QUANTILES, UNIQUE_CAP, profile_values, sketch_levels
from shipyard.errors import InvalidInputError, SchemaError


@pytest.fixture
def fraud() -> pd.DataFrame:
    return generate_fraud(5_000, seed=4)


def test_profile_is_strict_json(fraud: pd.DataFrame) -> None:
    profile = profile_frame(fraud, FRAUD_SCHEMA)
    assert json.loads(json.dumps(profile, allow_nan=False)) == profile


def test_profile_shape(fraud: pd.DataFrame) -> None:
    profile = profile_frame(fraud, FRAUD_SCHEMA, bins=10)
    assert profile["rows"] == 5_000
    assert list(profile["features"]) == FRAUD_SCHEMA.feature_names
    amount = profile["features"]["Amount"]
    assert amount["dtype"] == "float64"
    assert amount["count"] == 5_000
    assert amount["missing"] == 0
    assert amount["mean"] == pytest.approx(fraud["Amount"].mean())
    assert amount["min"] == fraud["Amount"].min()
    assert list(amount["quantiles"]) == ["p01", "p05", "p25", "p50", "p75", "p95", "p99"]
    assert amount["quantiles"]["p50"] == pytest.approx(fraud["Amount"].median())
    assert len(amount["histogram"]["edges"]) == 11
    assert len(amount["histogram"]["counts"]) == 10


def test_histogram_edges_span_min_to_max_through_p01_and_p99(fraud: pd.DataFrame) -> None:
    feature = profile_frame(fraud, FRAUD_SCHEMA)["features"]["V14"]
    edges = feature["histogram"]["edges"]
    assert edges[0] == feature["min"]
    assert edges[1] == feature["quantiles"]["p01"]
    assert edges[-2] == pytest.approx(feature["quantiles"]["p99"])
    assert edges[-1] == feature["max"]
    assert edges == sorted(edges)


def test_histogram_counts_sum_to_non_missing_count() -> None:
    schema = TableSchema(
        columns=[
            Column(name="x", nullable=True),
            Column(name="n", dtype="int64"),
            Column(name="b", dtype="bool"),
            Column(name="y", dtype="int64"),
        ],
        target="y",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=1_000)
    x[::7] = np.nan
    frame = pd.DataFrame(
        {
            "x": x,
            "n": rng.integers(0, 5, 1_000),
            "b": rng.random(1_000) < 0.3,
            "y": rng.integers(0, 2, 1_000),
        }
    )
    profile = profile_frame(frame, schema)
    json.dumps(profile, allow_nan=False)
    for name, feature in profile["features"].items():
        assert sum(feature["histogram"]["counts"]) == feature["count"], name
    assert profile["features"]["x"]["missing"] == 143
    assert profile["features"]["x"]["count"] == 857


def test_target_class_fractions(fraud: pd.DataFrame) -> None:
    target = profile_frame(fraud, FRAUD_SCHEMA)["target"]
    assert target["name"] == "Class"
    assert set(target["classes"]) == {"0", "1"}
    assert target["classes"]["1"] == pytest.approx(fraud["Class"].mean())
    assert sum(target["classes"].values()) == pytest.approx(1.0)


def test_no_target_in_the_frame(fraud: pd.DataFrame) -> None:
    profile = profile_frame(fraud.drop(columns="Class"), FRAUD_SCHEMA)
    assert profile["target"] is None


def test_all_missing_and_constant_columns() -> None:
    schema = TableSchema(columns=[Column(name="gone", nullable=True), Column(name="same")])
    frame = pd.DataFrame({"gone": [np.nan] * 4, "same": [2.0] * 4})
    profile = profile_frame(frame, schema)
    json.dumps(profile, allow_nan=False)
    gone = profile["features"]["gone"]
    assert gone["mean"] is None
    assert gone["quantiles"]["p50"] is None
    assert gone["histogram"] == {"edges": [], "counts": []}
    same = profile["features"]["same"]
    assert same["std"] == 0.0
    assert sum(same["histogram"]["counts"]) == 4


def test_string_features_and_float_target() -> None:
    schema = TableSchema(
        columns=[Column(name="city", dtype="string"), Column(name="price")], target="price"
    )
    frame = pd.DataFrame({"city": ["a", "b", "a", "a"], "price": [1.0, 2.0, 3.0, 4.0]})
    profile = profile_frame(frame, schema)
    json.dumps(profile, allow_nan=False)
    assert profile["features"]["city"]["categories"] == {"a": 0.75, "b": 0.25}
    assert profile["target"]["classes"] is None
    assert profile["target"]["summary"]["mean"] == 2.5


def test_profile_validates_the_frame(fraud: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match="missing column 'V3'"):
        profile_frame(fraud.drop(columns="V3"), FRAUD_SCHEMA)


def test_bins_must_be_at_least_two(fraud: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="bins must be at least 2"):
        profile_frame(fraud, FRAUD_SCHEMA, bins=1)


def test_small_column_sketch_is_its_sorted_values() -> None:
    schema = TableSchema(columns=[Column(name="x", nullable=True)])
    x = np.random.default_rng(1).normal(size=300)
    x[::10] = np.nan
    feature = profile_frame(pd.DataFrame({"x": x}), schema)["features"]["x"]
    assert feature["sketch"] == {"kind": "values", "values": sorted(x[np.isfinite(x)].tolist())}
    assert feature["unique"] == 270
    assert feature["categories"] is None


def test_large_column_sketch_is_a_quantile_function(fraud: pd.DataFrame) -> None:
    feature = profile_frame(fraud, FRAUD_SCHEMA)["features"]["Amount"]
    sketch = feature["sketch"]
    assert sketch["kind"] == "quantiles"
    assert len(sketch["values"]) == SKETCH_QUANTILES
    assert sketch["values"][0] == feature["min"]
    assert sketch["values"][-1] == feature["max"]
    assert sketch["values"] == sorted(sketch["values"])
    levels = sketch_levels(SKETCH_QUANTILES)
    np.testing.assert_allclose(sketch["values"], np.quantile(fraud["Amount"], levels))
    # Levels crowd at the tails, where heavy-tailed features need them.
    assert levels[1] - levels[0] < (levels[129] - levels[128]) / 100
    # A few KB of JSON per feature.
    assert len(json.dumps(sketch)) < 8_000
    assert feature["unique"] == UNIQUE_CAP


def test_few_valued_numeric_columns_keep_their_frequencies() -> None:
    schema = TableSchema(
        columns=[Column(name="n", dtype="int64"), Column(name="b", dtype="bool"), Column(name="h")]
    )
    frame = pd.DataFrame(
        {"n": [1, 2, 2, 3] * 500, "b": [True, False, False, False] * 500, "h": [0.5, 1.5] * 1000}
    )
    features = profile_frame(frame, schema)["features"]
    assert features["n"]["categories"] == {"1": 0.25, "2": 0.5, "3": 0.25}
    assert features["n"]["unique"] == 3
    assert features["b"]["categories"] == {"0": 0.75, "1": 0.25}
    assert features["h"]["categories"] == {"0.5": 0.5, "1.5": 0.5}
    assert {float(key) for key in features["h"]["categories"]} == {0.5, 1.5}


def test_scores_are_profiled_as_a_numeric_column(fraud: pd.DataFrame) -> None:
    scores = np.linspace(0.0, 1.0, len(fraud))
    profile = profile_frame(fraud, FRAUD_SCHEMA, scores=scores)
    assert profile["score"] == profile_values(scores)
    assert profile["score"]["count"] == len(fraud)
    assert profile["score"]["sketch"]["kind"] == "quantiles"
    assert profile_frame(fraud, FRAUD_SCHEMA)["score"] is None


def test_scores_must_match_the_rows(fraud: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="scores has 10 values for 5000 rows"):
        profile_frame(fraud, FRAUD_SCHEMA, scores=np.zeros(10))
    with pytest.raises(InvalidInputError, match="values must be one-dimensional"):
        profile_values(np.zeros((2, 2)))

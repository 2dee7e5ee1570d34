"""The ``housing`` generator: reproducible, in range, and non-linear where it says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from shipyard.data import HOUSING_SCHEMA, generate_housing, get_dataset
from shipyard.errors import InvalidInputError


def test_same_seed_same_table_other_seed_other_table() -> None:
    pd.testing.assert_frame_equal(generate_housing(500, seed=3), generate_housing(500, seed=3))
    assert not generate_housing(500, seed=3).equals(generate_housing(500, seed=4))


def test_the_table_fits_its_schema_and_stays_in_plausible_ranges() -> None:
    frame = generate_housing(20_000, seed=1)
    assert list(frame.columns) == HOUSING_SCHEMA.names
    pd.testing.assert_frame_equal(HOUSING_SCHEMA.validate_frame(frame), frame)
    assert frame["area_m2"].between(20, 400).all()
    assert frame["rooms"].between(1, 10).all()
    assert frame["age_years"].between(0, 150).all()
    assert frame["floor"].between(0, 30).all()
    assert (frame["price"] > 0).all()
    assert 150_000 < frame["price"].median() < 300_000
    # Bigger homes cost more; homes near the centre cost more per square metre.
    assert frame["price"].corr(frame["area_m2"]) > 0.5
    per_m2 = frame["price"] / frame["area_m2"]
    assert per_m2.corr(frame["distance_km"], method="spearman") < -0.5
    assert get_dataset("housing").schema is HOUSING_SCHEMA


def test_the_price_is_non_linear_enough_for_trees_to_beat_a_linear_model() -> None:
    frame = generate_housing(8_000, seed=2)
    features, price = frame.drop(columns="price"), frame["price"]
    x_train, x_test, y_train, y_test = train_test_split(features, price, random_state=0)
    linear = r2_score(y_test, Ridge().fit(x_train, y_train).predict(x_test))
    trees = HistGradientBoostingRegressor(random_state=0).fit(x_train, y_train)
    boosted = r2_score(y_test, trees.predict(x_test))
    assert boosted > 0.85  # ~12 % noise leaves room for a good model
    assert boosted > linear + 0.05


def test_the_waterfront_sells_at_a_premium() -> None:
    frame = generate_housing(40_000, seed=5)
    east = (frame["longitude"] - (-9.14)) * 111.32 * np.cos(np.radians(38.72))
    per_m2 = frame["price"] / frame["area_m2"]
    # Same distances from the centre, west waterfront against the east side.
    band = frame["distance_km"].between(7.5, 10)
    west, far_east = per_m2[band & (east <= -7.5)], per_m2[band & (east >= 7.5)]
    assert west.median() > 1.15 * far_east.median()


@pytest.mark.parametrize("rows", [0, -5, 1.5, True, "10"])
def test_rows_must_be_a_positive_whole_number(rows: object) -> None:
    with pytest.raises(InvalidInputError, match="rows must be a whole number of at least 1"):
        generate_housing(rows, seed=0)  # type: ignore[arg-type]

"""Rows for the users: generated or read, drifted, reordered to a model's features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipyard.data import FRAUD_SCHEMA, drift_fraud, generate_fraud
from shipyard.errors import InvalidInputError, SchemaError
from shipyard.traffic.rows import load_pool


def test_the_generator_gives_rows_labels_and_the_drifted_rows_of_a_scenario() -> None:
    pool = load_pool(data=None, rows=500, seed=3, drift="many")
    frame = generate_fraud(500, seed=3)
    assert pool.normal.names == FRAUD_SCHEMA.feature_names
    assert np.array_equal(pool.normal.values, frame[pool.normal.names].to_numpy(np.float64))
    assert pool.normal.labels == frame["Class"].tolist()
    drifted = drift_fraud(frame, "many", seed=3)
    assert pool.drifted is not None
    assert np.allclose(pool.drifted.values, drifted[pool.normal.names].to_numpy(np.float64))
    assert pool.scenario == "many"
    assert pool.classes() == [0, 1]


def test_a_file_drops_its_id_column_and_takes_its_label_column(tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("id,b,a,truth\nx-1,2,1,yes\nx-2,4,3,no\n")
    pool = load_pool(data=data, label_column="truth")
    assert pool.normal.names == ["b", "a"]
    assert pool.normal.labels == ["yes", "no"]
    ordered = pool.select(["a", "b"])
    assert ordered.normal.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(SchemaError, match="no column for the model's features c"):
        pool.select(["a", "c"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 10}, "--rows sizes the generated rows"),
        ({"drift": "many"}, "--drift moves the columns of the fraud dataset"),
        ({"drift_strength": 1.0}, "--drift-strength and --drift-features need --drift"),
    ],
)
def test_options_a_file_cannot_serve_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a,label\n1,0\n")
    with pytest.raises(InvalidInputError, match=message):
        load_pool(data=data, **kwargs)  # type: ignore[arg-type]


def test_text_features_and_missing_labels_are_named(tmp_path: Path) -> None:
    text = tmp_path / "text.csv"
    text.write_text("a,b,label\n1,x,0\n")
    with pytest.raises(SchemaError, match="column 'b' is not numeric"):
        load_pool(data=text)
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("a,label\n1,0\n2,\n")
    with pytest.raises(InvalidInputError, match="row 2 has no label"):
        load_pool(data=unlabelled)

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from shipyard.errors import SchemaError
from shipyard.inference import export_model
from shipyard.inference.batch import NonNumber, first_non_number, non_number_error, score_frame
from shipyard.inference.predictor import Predictor, predictor_from_files

NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    x, y = make_classification(400, 3, n_informative=2, n_redundant=0, random_state=0)
    model = LogisticRegression().fit(x, y)
    exported = export_model(model, feature_names=NAMES, task="classification")
    return predictor_from_files(
        "m", 1, exported.format, exported.files, exported.input_schema, exported.output_schema
    )


def test_scores_in_batches_and_keeps_other_columns(predictor: Predictor) -> None:
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(1000, 3)), columns=NAMES)
    frame.insert(0, "id", [f"t{i}" for i in range(1000)])
    seen: list[int] = []
    scored = score_frame(predictor, frame, batch_rows=300, progress=seen.append)
    assert seen == [300, 300, 300, 100]
    assert list(scored.columns) == ["id", "probability", "label"]
    assert scored["id"].tolist() == frame["id"].tolist()
    whole = predictor.predict(frame[NAMES].to_numpy(np.float32))
    np.testing.assert_allclose(scored["probability"], whole["probability"])


def test_features_are_taken_by_name_not_position(predictor: Predictor) -> None:
    frame = pd.DataFrame({"c": [1.0], "a": [2.0], "b": [3.0]})
    reordered = score_frame(predictor, frame)
    direct = predictor.predict(np.array([[2.0, 3.0, 1.0]], dtype=np.float32))
    assert reordered["probability"][0] == pytest.approx(float(direct["probability"][0]))


def test_missing_feature_column_is_named(predictor: Predictor) -> None:
    with pytest.raises(SchemaError, match=r"lacks 1 feature column.*: b"):
        score_frame(predictor, pd.DataFrame({"a": [1.0], "c": [2.0]}))


def test_text_in_a_feature_column_is_a_schema_error(predictor: Predictor) -> None:
    with pytest.raises(SchemaError, match="must be numeric"):
        score_frame(predictor, pd.DataFrame({"a": ["x"], "b": [1.0], "c": [2.0]}))


def test_the_first_non_number_is_the_earliest_row_of_any_feature() -> None:
    frame = pd.DataFrame(
        {"a": ["1.5", "x", "2"], "b": [1.0, 2.0, 3.0], "c": ["1", "2", None], "id": ["q", "r", "s"]}
    )
    assert first_non_number(frame, NAMES) == NonNumber(1, "a", "x")
    frame.loc[0, "c"] = "y"
    assert first_non_number(frame, NAMES) == NonNumber(0, "c", "y")
    assert first_non_number(frame[["b", "id"]], NAMES) is None  # text outside the features


def test_a_non_number_error_names_the_line_of_a_text_file() -> None:
    bad = NonNumber(9, "a", "x" * 80)
    message = str(non_number_error(Path("in.csv"), bad))
    assert message.startswith("in.csv: feature 'a' in row 10 (line 11) must be a number, got 'x")
    assert "…; fix or drop that row" in message
    assert "in row 10 must" in str(non_number_error(Path("in.parquet"), bad))

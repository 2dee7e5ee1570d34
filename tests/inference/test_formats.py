import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shipyard.data.images import ImageFormat
from shipyard.errors import ArtifactError, ConfigurationError
from shipyard.inference import export_model
from shipyard.inference.formats import ONNX_FILE, skops_dumps, skops_trusted_types
from shipyard.inference.predictor import predictor_from_files


def _roundtrip(estimator: Any, x: np.ndarray, task: str, fmt: str = "auto") -> dict[str, Any]:
    names = [f"f{i}" for i in range(x.shape[1])]
    exported = export_model(estimator, feature_names=names, task=task, format=fmt)  # type: ignore[arg-type]
    predictor = predictor_from_files(
        "m", 1, exported.format, exported.files, exported.input_schema, exported.output_schema
    )
    return {"exported": exported, "outputs": predictor.predict(x.astype(np.float32))}


def test_binary_classifier_exports_to_onnx_with_probability_and_label() -> None:
    x, y = make_classification(2000, 8, random_state=0)
    x = x.astype(np.float32)  # what the pipeline trains on, so thresholds are float32-exact
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    result = _roundtrip(model, x, "classification")
    assert result["exported"].format == "onnx"
    outputs = result["outputs"]
    assert set(outputs) == {"probability", "label"}
    expected = model.predict_proba(x.astype(np.float32))[:, 1]
    assert np.abs(outputs["probability"] - expected).max() < 1e-4
    assert (outputs["label"] == model.predict(x.astype(np.float32))).mean() > 0.999
    schema = result["exported"].output_schema
    assert schema["classes"] == [0, 1]
    assert [o["name"] for o in schema["outputs"]] == ["probability", "label"]


def test_multiclass_pipeline_exports_probabilities_per_class() -> None:
    digits = load_digits()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(
        digits.data, digits.target
    )
    outputs = _roundtrip(model, digits.data, "classification")["outputs"]
    assert outputs["probabilities"].shape == (len(digits.data), 10)
    assert (outputs["label"] == model.predict(digits.data)).mean() > 0.99


def test_regressor_exports_predictions() -> None:
    x, y = make_regression(500, 5, random_state=0)
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(x, y)
    outputs = _roundtrip(model, x, "regression")["outputs"]
    np.testing.assert_allclose(
        outputs["prediction"], model.predict(x.astype(np.float32)), rtol=1e-4, atol=1e-2
    )


def test_skops_format_round_trips_without_unpickling() -> None:
    x, y = make_classification(300, 4, random_state=1)
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    result = _roundtrip(model, x, "classification", fmt="skops")
    assert result["exported"].format == "skops"
    assert list(result["exported"].files) == ["model.skops"]
    np.testing.assert_allclose(
        result["outputs"]["probability"],
        model.predict_proba(x.astype(np.float32))[:, 1],
        rtol=1e-5,
    )


def test_skops_dumps_writes_what_skops_reads_with_the_same_types() -> None:
    x, y = make_classification(300, 4, random_state=1)
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    data = skops_dumps(model)
    assert skops_trusted_types(data) == skops_trusted_types(skops.io.dumps(model))
    loaded = skops.io.loads(data, trusted=skops_trusted_types(data))
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # compact JSON, not indented
        assert b"\n" not in archive.read("schema.json")


@dataclass
class Smuggled:
    payload: str = "rm -rf /"


def test_skops_refuses_types_outside_the_allow_list() -> None:
    data = skops.io.dumps({"model": Smuggled()})
    with pytest.raises(ArtifactError, match=r"outside the allow-list: .*Smuggled"):
        skops_trusted_types(data)


def test_onnx_only_export_of_an_unconvertible_estimator_says_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match="format: skops"):
        export_model(Smuggled(), feature_names=["a"], task="regression", format="onnx")


def test_an_image_model_records_its_image_format_and_exports_its_own_graph() -> None:
    """An estimator with ``to_onnx`` (the CNN) is exported by it; ``image`` is recorded."""

    class OwnGraph:
        classes_ = np.array(["a", "b"], dtype=object)

        def to_onnx(self, input_name: str) -> bytes:
            return f"graph reading {input_name}".encode()

    fmt = ImageFormat(width=2, height=2, mode="L", max_value=16)
    exported = export_model(
        OwnGraph(), feature_names=fmt.feature_names(), task="classification", image=fmt
    )
    assert exported.files == {ONNX_FILE: b"graph reading input"}
    assert exported.input_schema["image"] == {
        "width": 2,
        "height": 2,
        "mode": "L",
        "max_value": 16.0,
    }
    assert ImageFormat.of_schema(exported.input_schema) == fmt
    assert exported.output_schema["classes"] == ["a", "b"]

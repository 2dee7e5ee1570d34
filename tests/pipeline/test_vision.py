"""The convolutional network: scikit-learn's contract, ONNX export with its preprocessing,
bytes without pickle, and a clear error without PyTorch."""

from __future__ import annotations

import io
import sys

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from sklearn.base import clone

from shipyard.data.shapes import SHAPE_CLASSES, generate_shapes
from shipyard.errors import ConfigurationError, InvalidInputError
from shipyard.pipeline.vision import ConvNetClassifier

pytest.importorskip("torch")


def _stripes(count: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.object_]]:
    """Small 8×8 RGB images: horizontal or vertical stripes, as names."""
    images, labels = generate_shapes(count, seed=2)
    keep = np.isin(labels, [SHAPE_CLASSES.index("hstripes"), SHAPE_CLASSES.index("vstripes")])
    small = images[keep][:, ::4, ::4, :]  # 32×32 → 8×8: stripes of 5–10 pixels survive
    names = np.asarray(SHAPE_CLASSES, dtype=object)[labels[keep]]
    return small.reshape(len(small), -1).astype(np.float32), names


def _small(**params: object) -> ConvNetClassifier:
    chosen: dict[str, object] = {"epochs": 8, "filters": 8, "random_state": 0, **params}
    return ConvNetClassifier(height=8, width=8, channels=3, **chosen)


@pytest.fixture(scope="module")
def fitted() -> tuple[ConvNetClassifier, npt.NDArray[np.float32], npt.NDArray[np.object_]]:
    pixels, names = _stripes(400)
    return _small().fit(pixels, names), pixels, names


def test_it_follows_scikit_learns_contract(fitted: tuple) -> None:
    model, pixels, names = fitted
    assert set(model.classes_) == {"hstripes", "vstripes"}
    proba = model.predict_proba(pixels)
    assert proba.shape == (len(pixels), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.mean(model.predict(pixels) == names) > 0.95
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(clone(model), "classes_")


def test_the_same_seed_trains_the_same_network(fitted: tuple) -> None:
    model, pixels, names = fitted
    again = _small().fit(pixels, names)
    np.testing.assert_array_equal(again.predict_proba(pixels), model.predict_proba(pixels))


def test_the_onnx_graph_takes_raw_pixels_and_names_the_classes(fitted: tuple) -> None:
    model, pixels, _ = fitted
    session = ort.InferenceSession(model.to_onnx("input"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    proba, labels = session.run(["probabilities", "label"], {"input": pixels[:50]})
    np.testing.assert_allclose(proba, model.predict_proba(pixels[:50]), atol=1e-5)
    assert labels.tolist() == model.predict(pixels[:50]).tolist()


def test_integer_classes_come_out_of_onnx_as_integers(fitted: tuple) -> None:
    _, pixels, names = fitted
    numbers = (names == "vstripes").astype(np.int64)
    model = _small(epochs=2).fit(pixels, numbers)
    session = ort.InferenceSession(model.to_onnx("input"), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"input": pixels[:5]})[0]
    assert labels.dtype == np.int64
    assert labels.tolist() == model.predict(pixels[:5]).tolist()


def test_bytes_rebuild_the_same_network_without_pickle(fitted: tuple) -> None:
    model, pixels, _ = fitted
    data = model.to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        assert "meta" in stored.files  # JSON, read back without pickle
    rebuilt = ConvNetClassifier.from_bytes(data)
    assert rebuilt.get_params() == model.get_params()
    np.testing.assert_array_equal(rebuilt.predict_proba(pixels), model.predict_proba(pixels))
    assert rebuilt.classes_.tolist() == model.classes_.tolist()
    with pytest.raises(InvalidInputError, match=r"not a ConvNetClassifier\.to_bytes"):
        ConvNetClassifier.from_bytes(b"not an npz")


def test_bad_sizes_and_params_are_refused_before_training() -> None:
    pixels, names = _stripes(60)
    with pytest.raises(InvalidInputError, match="needs the image size"):
        ConvNetClassifier().fit(pixels, names)
    with pytest.raises(InvalidInputError, match=r"192 features are not 8×8 images of 1"):
        ConvNetClassifier(height=8, width=8, channels=1).fit(pixels, names)
    with pytest.raises(InvalidInputError, match="epochs must be a whole number"):
        _small(epochs=0).fit(pixels, names)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        _small().fit(pixels, np.full(len(pixels), "one"))


def test_without_pytorch_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels, names = _stripes(20)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'shipyard-ml\[vision\]'"):
        _small().fit(pixels, names)
    assert ConvNetClassifier().get_params()["filters"] == 16  # building one needs no torch

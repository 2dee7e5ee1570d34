"""A loaded, verified model version that turns a feature matrix into predictions.

``load_predictor`` only accepts a ``VerifiedArtifact``: the registry has checked the digest and
signature before any byte reaches a parser, and no format here unpickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd

from shipyard.errors import ArtifactError, SchemaError
from shipyard.inference.formats import ONNX_FILE, SKOPS_FILE, skops_io, skops_trusted_types
from shipyard.registry import VerifiedArtifact

Features = npt.NDArray[np.float32]
Outputs = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class ScoredRows:
    """Rows a version scored: the answered requests of a batch, or such rows as the version
    in shadow scored them (not answered)."""

    model: str
    version: int
    ids: Sequence[str]
    """The rows' prediction ids (a shadow's: those the answering version gave them)."""
    names: Sequence[str]
    features: Features
    """In the scoring version's feature order."""
    outputs: Outputs
    latency_ms: float | npt.NDArray[np.float32]
    """Each row's time from its request's arrival to its answer; a shadow's: its own
    prediction time."""


class Predictor(Protocol):
    """What every loaded model offers: its schemas and ``predict`` on a float32 matrix."""

    name: str
    version: int
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]

    def predict(self, features: Features) -> Outputs:
        """Predict a batch of shape (rows, features); outputs are named as in output_schema."""
        ...


@dataclass
class _PredictorBase:
    name: str
    version: int
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    classes: npt.NDArray[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = np.asarray(self.output_schema.get("classes", []))

    @property
    def feature_names(self) -> list[str]:
        """Input feature names in the order the model expects them."""
        return list(self.input_schema["features"])

    def _outputs(self, labels: npt.NDArray[Any], proba: npt.NDArray[Any] | None) -> Outputs:
        if self.output_schema["task"] == "regression":
            return {"prediction": np.asarray(labels, dtype=np.float32).reshape(-1)}
        assert proba is not None
        proba = np.asarray(proba, dtype=np.float32)
        label = np.asarray(labels).reshape(-1)
        if len(self.classes) == 2:
            return {"probability": np.ascontiguousarray(proba[:, 1]), "label": label}
        return {"probabilities": proba, "label": label}


class OnnxPredictor(_PredictorBase):
    """ONNX Runtime session over an exported model."""

    def __init__(
        self,
        name: str,
        version: int,
        model: bytes,
        input_schema: dict[str, Any],
        output_schema: dict[str, Any],
        *,
        threads: int = 1,
    ) -> None:
        super().__init__(name, version, input_schema, output_schema)
        options = ort.SessionOptions()
        # One thread per session: requests are batched, and several processes share the cores.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped exceptions
            raise ArtifactError(f"ONNX Runtime cannot load {name}:{version} ({error})") from error
        self._input = self._session.get_inputs()[0].name
        self._output_names = [o.name for o in self._session.get_outputs()]

    def predict(self, features: Features) -> Outputs:
        """Run the ONNX graph on a float32 batch."""
        results = self._session.run(None, {self._input: features})
        named = dict(zip(self._output_names, results, strict=True))
        if self.output_schema["task"] == "regression":
            return self._outputs(named[self._output_names[0]], None)
        return self._outputs(named["label"], named["probabilities"])


class SkopsPredictor(_PredictorBase):
    """A scikit-learn estimator rebuilt by skops from an allow-list of types."""

    def __init__(
        self,
        name: str,
        version: int,
        data: bytes,
        input_schema: dict[str, Any],
        output_schema: dict[str, Any],
    ) -> None:
        super().__init__(name, version, input_schema, output_schema)
        self._estimator = skops_io().loads(data, trusted=skops_trusted_types(data))

    def predict(self, features: Features) -> Outputs:
        """Call the estimator on a batch."""
        if self.output_schema["task"] == "regression":
            return self._outputs(self._estimator.predict(features), None)
        proba = self._estimator.predict_proba(features)
        labels = self.classes[np.argmax(proba, axis=1)]
        return self._outputs(labels, proba)


def load_predictor(artifact: VerifiedArtifact, *, threads: int = 1) -> Predictor:
    """Build the predictor for an artifact the registry has verified."""
    manifest = artifact.manifest
    return predictor_from_files(
        manifest.name,
        manifest.version,
        manifest.format,
        artifact.files,
        manifest.input_schema,
        manifest.output_schema,
        threads=threads,
    )


def predictor_from_files(
    name: str,
    version: int,
    format: str,
    files: Mapping[str, bytes],
    input_schema: dict[str, Any],
    output_schema: dict[str, Any],
    *,
    threads: int = 1,
) -> Predictor:
    """Build a predictor from exported files (verified ones, or ones this process just made)."""
    if format == "onnx" and ONNX_FILE in files:
        return OnnxPredictor(
            name, version, files[ONNX_FILE], input_schema, output_schema, threads=threads
        )
    if format == "skops" and SKOPS_FILE in files:
        return SkopsPredictor(name, version, files[SKOPS_FILE], input_schema, output_schema)
    raise ArtifactError(
        f"{name}:{version} has format {format!r} with files {sorted(files)}, which this "
        "Shipyard cannot load; upgrade Shipyard or re-register the model"
    )


def frame_to_features(frame: pd.DataFrame, predictor: Predictor) -> Features:
    """Select and order the predictor's features from a table as a float32 matrix."""
    names: list[str] = list(predictor.input_schema["features"])
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise SchemaError(
            f"input lacks {len(missing)} feature column(s) of {predictor.name}:"
            f"{predictor.version}: {', '.join(missing[:10])}"
        )
    try:
        return np.ascontiguousarray(frame[names].to_numpy(dtype=np.float32))
    except (TypeError, ValueError) as error:
        raise SchemaError(f"feature columns must be numeric: {error}") from error


def outputs_to_frame(outputs: Outputs) -> pd.DataFrame:
    """Predictions as a table, one column per output (probabilities spread per class)."""
    columns: dict[str, Any] = {}
    for name, values in outputs.items():
        if values.ndim == 2:
            for i in range(values.shape[1]):
                columns[f"{name}_{i}"] = values[:, i]
        else:
            columns[name] = values
    return pd.DataFrame(columns)

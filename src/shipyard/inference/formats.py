"""Turning a fitted scikit-learn estimator into artifact files that load without unpickling.

ONNX (skl2onnx export, ONNX Runtime inference) is the default. Estimators that skl2onnx cannot
convert fall back to skops, whose loader refuses any type outside an allow-list. Both formats
record an input schema (feature names, dtype) and an output schema (task, classes, outputs).
An image model's input schema also records its ``ImageFormat`` under ``"image"``; an
estimator with its own ``to_onnx(input_name) -> bytes`` (the PyTorch network of
``pipeline/vision.py``) is exported by it instead of by skl2onnx.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shipyard.data.images import ImageFormat
from shipyard.errors import ArtifactError, ConfigurationError

logger = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
Format = Literal["auto", "onnx", "skops"]
INPUT_NAME = "input"
ONNX_FILE = "model.onnx"
SKOPS_FILE = "model.skops"
# Modules whose types a skops artifact may contain. Everything else is refused at load time.
SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


@dataclass(frozen=True)
class ExportedModel:
    """Files of one exported model plus the schemas its manifest records."""

    format: Literal["onnx", "skops"]
    files: dict[str, bytes]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


def output_schema_for(estimator: Any, task: Task) -> dict[str, Any]:
    """Describe what a predictor of this estimator returns."""
    if task == "regression":
        return {"task": task, "outputs": [{"name": "prediction", "dtype": "float32"}]}
    classes = [_plain(c) for c in estimator.classes_]
    label_dtype = "int64" if all(isinstance(c, int) for c in classes) else "string"
    outputs: list[dict[str, Any]]
    if len(classes) == 2:
        outputs = [
            {"name": "probability", "dtype": "float32", "description": f"P(class={classes[1]})"},
            {"name": "label", "dtype": label_dtype},
        ]
    else:
        outputs = [
            {"name": "probabilities", "dtype": "float32", "shape": [-1, len(classes)]},
            {"name": "label", "dtype": label_dtype},
        ]
    return {"task": task, "classes": classes, "outputs": outputs}


def export_model(
    estimator: Any,
    *,
    feature_names: list[str],
    task: Task,
    format: Format = "auto",
    columns: list[dict[str, Any]] | None = None,
    image: ImageFormat | None = None,
) -> ExportedModel:
    """Export a fitted estimator to ONNX, or to skops when ONNX cannot express it;
    ``image`` is the format of an image model's images."""
    input_schema: dict[str, Any] = {
        "name": INPUT_NAME,
        "dtype": "float32",
        "shape": [-1, len(feature_names)],
        "features": list(feature_names),
    }
    if columns is not None:
        input_schema["columns"] = columns
    if image is not None:
        input_schema["image"] = image.model_dump()
    output_schema = output_schema_for(estimator, task)
    if format in ("auto", "onnx"):
        try:
            onnx_bytes = _to_onnx(estimator, len(feature_names), task)
        except Exception as error:  # skl2onnx raises many unrelated types for "unsupported"
            if format == "onnx":
                raise ConfigurationError(
                    f"cannot export {type(estimator).__name__} to ONNX ({error}); "
                    "set `format: skops` (or `auto`) in the spec's register section"
                ) from error
            logger.warning("ONNX export failed (%s); falling back to skops", error)
        else:
            return ExportedModel("onnx", {ONNX_FILE: onnx_bytes}, input_schema, output_schema)
    return ExportedModel("skops", {SKOPS_FILE: skops_dumps(estimator)}, input_schema, output_schema)


def _to_onnx(estimator: Any, n_features: int, task: Task) -> bytes:
    own = getattr(estimator, "to_onnx", None)
    if callable(own):
        data: bytes = own(INPUT_NAME)
        return data
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = None
    if task == "classification":
        # Plain probability tensors instead of a list of dicts: what ONNX Runtime and
        # Open Inference Protocol clients can consume without a conversion step.
        options = {id(estimator): {"zipmap": False}}
    model = to_onnx(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    serialised: bytes = model.SerializeToString()
    return serialised


def skops_io() -> Any:
    """skops.io, imported on first use: importing it walks every scikit-learn estimator
    (over a second), which processes that only serve ONNX models never need."""
    import skops.io

    return skops.io


def skops_dumps(estimator: Any) -> bytes:
    """``skops.io.dumps(estimator)`` with its ``schema.json`` written as compact JSON by the
    C encoder: skops writes it indented, which Python can only do in pure Python, over half
    the time of dumping a gradient-boosted model (a 71-tree one: 33 ms → 21 ms). The same
    archive otherwise, read by ``skops.io.loads``. This builds the archive from skops'
    ``SaveContext`` and ``get_state`` as ``skops.io._persist._save`` does, which is why
    ``pyproject.toml`` pins skops to one minor release."""
    skops_io()  # registers skops' get_state functions
    import skops
    from skops.io._utils import SaveContext, get_state

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(estimator, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", json.dumps(state, separators=(",", ":")))
    return buffer.getvalue()


def skops_trusted_types(data: bytes) -> list[str]:
    """Types a skops file needs, checked against the allow-list before anything is built."""
    needed = skops_io().get_untrusted_types(data=data)
    refused = [name for name in needed if not name.startswith(SKOPS_TRUSTED_PREFIXES)]
    if refused:
        raise ArtifactError(
            f"skops artifact contains types outside the allow-list: {', '.join(refused)}; "
            "re-export the model with only scikit-learn components"
        )
    return list(needed)


def _plain(value: Any) -> Any:
    """A numpy scalar as the matching Python scalar, so schemas serialise as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value

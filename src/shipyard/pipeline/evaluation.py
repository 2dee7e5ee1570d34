"""A registered version judged on a labelled table by the metrics of the spec that trained it.

``evaluate_frame`` is the I/O-free core (a predictor, the spec, a table → metrics); the
spec comes from the version's run (``trained_spec``), so a version is always judged by the
metrics and target its own pipeline used, computed by the pipeline's own ``score_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from shipyard.errors import ConflictError, InvalidInputError, SchemaError
from shipyard.inference.batch import DEFAULT_BATCH_ROWS, check_numbers
from shipyard.inference.predictor import Predictor, frame_to_features
from shipyard.pipeline.spec import Spec, parse_spec
from shipyard.pipeline.stages import score_metrics
from shipyard.registry import ModelVersionInfo, Registry

#: Stands in for the spec's own data source when a stored spec is parsed for its metrics and
#: target only: a spec run with ``--data`` names no source of its own.
_NO_DATA = Path("evaluated-table")


@dataclass(frozen=True)
class Evaluation:
    """The metrics of one version on one labelled table."""

    model: str
    version: int
    spec: str
    target: str
    rows: int
    metrics: dict[str, float]


def trained_spec(registry: Registry, version: ModelVersionInfo) -> Spec:
    """The spec of the run that registered ``version`` (its metrics, target and task)."""
    if version.run_id is None:
        raise ConflictError(
            f"{version.ref} was registered without a pipeline run, so no spec names its "
            "target and metrics; evaluate a version a pipeline trained (`shipyard runs list`)"
        )
    text = registry.runs.spec_text(version.run_id)
    return parse_spec(text, source=f"the spec of run {version.run_id}", data_file=_NO_DATA)


def evaluate_frame(
    spec: Spec, predictor: Predictor, frame: pd.DataFrame, source: str
) -> Evaluation:
    """Score every row of ``frame`` and compute ``spec``'s metrics against its target column.

    ``source`` names the table in errors (a file name: its suffix maps rows to lines)."""
    named = f"{predictor.name}:{predictor.version}"
    target = spec.data.target
    if target not in frame.columns:
        raise SchemaError(
            f"{source} has no column {target!r}, the target the spec {spec.name!r} that "
            f"trained {named} names; add the true values as a column {target!r}"
        )
    if len(frame) < 2:
        raise InvalidInputError(
            f"{source} has {len(frame)} row(s); an evaluation needs at least 2 labelled rows"
        )
    check_numbers(frame, list(predictor.input_schema["features"]), source)
    features = frame_to_features(frame, predictor)
    y_true = _labels(frame[target], source)
    outputs: list[dict[str, npt.NDArray[Any]]] = [
        predictor.predict(features[start : start + DEFAULT_BATCH_ROWS])
        for start in range(0, len(features), DEFAULT_BATCH_ROWS)
    ]
    joined = {name: np.concatenate([part[name] for part in outputs]) for name in outputs[0]}
    if spec.task == "regression":
        if not np.issubdtype(y_true.dtype, np.number):
            raise SchemaError(
                f"{source}: the target {target!r} must hold numbers for the regressor {named}"
            )
        predictions = joined["prediction"]
        metrics = score_metrics(spec, y_true.astype(np.float64), predictions, predictions)
    else:
        classes = np.asarray(predictor.output_schema.get("classes", []))
        y_true = _as_classes(y_true, classes, target, named, source)
        found = np.unique(y_true)
        if len(found) < 2:
            raise SchemaError(
                f"{source}: the target {target!r} holds only class {found.tolist()[0]!r}; the "
                f"metrics of {named} ({', '.join(spec.metrics)}) need rows of two classes"
            )
        scores = joined["probability"] if "probability" in joined else joined["probabilities"]
        metrics = score_metrics(spec, y_true, scores, joined["label"])
    return Evaluation(
        model=predictor.name,
        version=predictor.version,
        spec=spec.name,
        target=target,
        rows=len(frame),
        metrics=metrics,
    )


def _labels(column: pd.Series, source: str) -> npt.NDArray[Any]:
    """The target column's values; a missing one is refused naming its row."""
    missing = column.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + 1
        raise SchemaError(
            f"{source}: the target {column.name!r} is empty in row {row}; every evaluated "
            "row needs its true value"
        )
    return column.to_numpy()


def _as_classes(
    y_true: npt.NDArray[Any], classes: npt.NDArray[Any], target: str, named: str, source: str
) -> npt.NDArray[Any]:
    """Labels in the model's class type (``"1"`` in a text column is class 1); labels that
    are no class of the model are refused, naming them."""
    if len(classes) and y_true.dtype != classes.dtype:
        try:
            cast = y_true.astype(classes.dtype)
        except (TypeError, ValueError):
            cast = y_true  # named below as labels that are no class
        # 1.0 is class 1; 1.5 is no class, though a cast to integers would make it one.
        if not (np.issubdtype(y_true.dtype, np.number) and np.any(cast != y_true)):
            y_true = cast
    known = set(classes.tolist())
    unknown = sorted({repr(v) for v in y_true.tolist() if v not in known}) if known else []
    if unknown:
        listed = ", ".join(repr(c) for c in classes.tolist())
        raise SchemaError(
            f"{source}: the target {target!r} holds {', '.join(unknown[:5])}, which "
            f"{'is' if len(unknown) == 1 else 'are'} no class of {named} ({listed})"
        )
    return y_true

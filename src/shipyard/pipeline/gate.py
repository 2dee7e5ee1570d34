"""The retrain gate: a candidate and the production version scored on the same labelled rows.

The rows are the newest labelled production rows, which the candidate did not train on
(``pipeline/labelled.py``'s ``split_holdout``); both versions are loaded from the registry
verified, as a server would load them, and measured with the spec's metrics. The candidate
wins when it beats production on the gate metric by ``min_delta`` (in the metric's better
direction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.inference.predictor import frame_to_features, load_predictor
from shipyard.pipeline.estimators import METRICS
from shipyard.pipeline.labelled import span
from shipyard.pipeline.stages import score_metrics

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.monitoring.retraining import GateSpec
    from shipyard.pipeline.spec import Spec
    from shipyard.registry import ModelVersionInfo, Registry


@dataclass(frozen=True)
class Verdict:
    """Whether the candidate won, and the evidence of both sides."""

    won: bool
    comparison: str
    """One line: both values, the rows, ``min_delta``."""
    evidence: dict[str, Any]


def judge(
    registry: Registry,
    spec: Spec,
    gate: GateSpec,
    production: ModelVersionInfo,
    candidate: ModelVersionInfo,
    rows: pd.DataFrame,
    *,
    shadow: int | None = None,
) -> Verdict:
    """Score both versions on ``rows`` and compare them on the gate metric (``shadow``: the
    rows are the first that many labelled live requests both versions scored, not the
    hold-out)."""
    metric = gate.metric or spec.retrain_metric
    current = measure(registry, spec, production, rows)
    challenger = measure(registry, spec, candidate, rows)
    gain = challenger[metric] - current[metric]
    if not METRICS[metric].greater_is_better:
        gain = -gain
    won = bool(np.isfinite(gain) and gain >= gate.min_delta)
    comparison = (
        f"{metric} {challenger[metric]:.4f} (v{candidate.version}) vs {current[metric]:.4f} "
        f"(v{production.version}) on the {len(rows):,} "
        f"{'labelled live requests both scored' if shadow else 'newest labelled rows'}, "
        f"min_delta {gate.min_delta}"
    )
    evidence = {
        "won": won,
        "metric": metric,
        "candidate": {
            "version": candidate.version,
            "value": challenger[metric],
            "metrics": challenger,
        },
        "current": {"version": production.version, "value": current[metric], "metrics": current},
        "gain": gain,
        "min_delta": gate.min_delta,
    }
    if shadow is None:
        note = "the newest labelled rows, held out of the candidate's training data"
        evidence["holdout"] = {**span(rows), "share": gate.holdout, "note": note}
    else:
        note = (
            f"the first {shadow:,} labelled live requests the candidate scored in shadow "
            "and production answered"
        )
        evidence["shadow"] = {**span(rows), "needed": shadow, "note": note}
    return Verdict(won, comparison, evidence)


def measure(
    registry: Registry, spec: Spec, version: ModelVersionInfo, rows: pd.DataFrame
) -> dict[str, float]:
    """The spec's metrics of a version (loaded verified) on labelled rows."""
    predictor = load_predictor(registry.load_artifact(version.ref))
    outputs = predictor.predict(frame_to_features(rows, predictor))
    y_true = rows[spec.data.target].to_numpy()
    if spec.task == "regression":
        predictions = outputs["prediction"]
        return score_metrics(spec, y_true, predictions, predictions)
    scores = outputs["probability"] if "probability" in outputs else outputs["probabilities"]
    return score_metrics(spec, y_true, scores, outputs["label"])


def as_json(value: Any) -> Any:
    """Evidence as JSON: numpy numbers as Python ones, NaN and infinity as None."""
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value

"""The retrain gate: a candidate and the production version scored on the same labelled rows.

The rows are the newest labelled production rows, which the candidate did not train on
(``pipeline/labelled.py``'s ``split_holdout``); both versions are loaded from the registry
verified, as a server would load them, and measured with the spec's metrics. The candidate
wins when it beats production on the gate metric by ``min_delta`` (in the metric's better
direction).
"""

from __future__ import annotations

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
) -> Verdict:
    """Score both versions on ``rows`` and compare them on the gate metric."""
    metric = gate.metric or spec.retrain_metric
    current = measure(registry, spec, production, rows)
    challenger = measure(registry, spec, candidate, rows)
    gain = challenger[metric] - current[metric]
    if not METRICS[metric].greater_is_better:
        gain = -gain
    won = bool(np.isfinite(gain) and gain >= gate.min_delta)
    comparison = (
        f"{metric} {challenger[metric]:.4f} (v{candidate.version}) vs {current[metric]:.4f} "
        f"(v{production.version}) on the {len(rows):,} newest labelled rows, "
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
        "holdout": {
            **span(rows),
            "share": gate.holdout,
            "note": "the newest labelled rows, held out of the candidate's training data",
        },
    }
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

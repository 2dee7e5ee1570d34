"""A fraud model in production with a ``retrain:`` section, and production traffic for it:
predictions really made by the production version, logged, and labelled — with or without
concept drift (``shipyard.data``'s ``concept`` scenario: a new fraud pattern it misses)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shipyard.data import drift_fraud, generate_fraud
from shipyard.inference.predictor import frame_to_features, load_predictor
from shipyard.monitoring.log import open_prediction_log, prediction_table
from shipyard.pipeline import Runner, parse_spec
from shipyard.registry import Registry
from shipyard.settings import Settings

MODEL = "fraud"
#: Fraud is 3 % of the rows: windows of a few thousand labels then hold enough positives.
FRAUD_RATE = 0.03
RETRAIN = """\
retrain:
  triggers:
    drift.detected: true
    performance.degraded: {margin: 0.05}
  data: {min_rows: 500}
  gate: {min_delta: 0.01, holdout: 0.3}
  cooldown: 1h
"""


def spec_text(
    *, retrain: str | None = RETRAIN, max_iter: int = 60, monitoring: str | None = None
) -> str:
    """The fraud spec the tests train with (its data comes from --data)."""
    text = f"""\
name: {MODEL}
data: {{dataset: fraud, target: Class}}
task: classification
model: {{name: {MODEL}, type: HistGradientBoostingClassifier, params: {{max_iter: {max_iter}}}}}
split: {{test_size: 0.25, stratify: true, random_state: 42}}
metrics: [average_precision, roc_auc]
promotion: {{alias: production, metric: average_precision, require: beats_current}}
"""
    if monitoring:
        text += monitoring
    if retrain:
        text += retrain
    return text


def train_production(
    settings: Settings, folder: Path, *, rows: int = 6000, text: str | None = None
) -> None:
    """Train fraud v1 into production from ``rows`` generated transactions (its data file in
    ``folder``)."""
    data = folder / "train.parquet"
    generate_fraud(rows, seed=3, fraud_rate=FRAUD_RATE).to_parquet(data)
    text = text or spec_text()
    spec = parse_spec(text, data_file=data)
    with Registry.open(settings) as registry:
        result = Runner(registry).run(spec, text)
    assert result.promotion.promoted


_TRAINED: dict[str, Path] = {}


def copy_of_production(cache: Path, home: Path, retrain: str = RETRAIN) -> Settings:
    """A home (SQLite) with fraud v1 in production, copied from one trained once per session
    (per ``retrain`` section) into ``cache`` (training takes seconds; a copy, milliseconds)."""
    if retrain not in _TRAINED:
        trained = cache / f"home-{len(_TRAINED)}"
        folder = cache / f"data-{len(_TRAINED)}"
        folder.mkdir(parents=True, exist_ok=True)
        train_production(Settings(home=trained), folder, text=spec_text(retrain=retrain))
        _TRAINED[retrain] = trained
    shutil.copytree(_TRAINED[retrain], home)
    return Settings(home=home)


def serve_traffic(
    settings: Settings,
    rows: int,
    *,
    seed: int,
    drift: str | None = None,
    strength: float | None = None,
    prefix: str = "t",
    label: bool = True,
    shadow: int | None = None,
    truth: str = "true",
) -> list[str]:
    """``rows`` transactions predicted by fraud@production, logged over the last ``rows``
    milliseconds, and (``label``) their labels fed back; returns their ids. ``shadow``: the
    same rows scored by that version too, logged under it with the same ids. ``truth``:
    the labels are the true ones, or the predicted labels of ``production`` or ``shadow``.
    With ``shadow`` the rows are logged from now on (after the shadow opened), production's
    a millisecond before the shadow's, as a server logs them."""
    frame = generate_fraud(rows, seed=seed, fraud_rate=FRAUD_RATE)
    if drift is not None:
        frame = drift_fraud(frame, drift, strength=strength, seed=seed)
    log = open_prediction_log(settings)
    assert log is not None
    with Registry.open(settings) as registry:
        predictor = load_predictor(registry.load_artifact(f"{MODEL}@production"))
        features = frame_to_features(frame, predictor)
        outputs = predictor.predict(features)
        ids = [f"{prefix}{seed}-{i}" for i in range(rows)]
        start = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ms")
        if shadow is None:
            start -= rows
        times = start + np.arange(rows)  # one a millisecond
        table = prediction_table(
            MODEL,
            predictor.version,
            "http",
            ids,
            predictor.feature_names,
            features,
            outputs,
            1.0,
            times,
        )
        log.write(table)
        answers = {"true": frame["Class"].to_numpy(), "production": outputs["label"]}
        if shadow is not None:
            candidate = load_predictor(registry.load_artifact(f"{MODEL}:{shadow}"))
            rows_of_candidate = frame_to_features(frame, candidate)
            scored = candidate.predict(rows_of_candidate)
            answers["shadow"] = scored["label"]
            log.write(
                prediction_table(
                    MODEL,
                    shadow,
                    "http",
                    ids,
                    candidate.feature_names,
                    rows_of_candidate,
                    scored,
                    1.0,
                    times + np.timedelta64(1, "ms"),
                )
            )
        if label:
            labels = [str(v) for v in answers[truth].tolist()]
            pairs = list(zip(ids, labels, strict=True))
            registry.monitoring.add_feedback(MODEL, pairs, source="file")
    log.close()
    return ids

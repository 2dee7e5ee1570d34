"""Scoring a whole table through a predictor in bounded batches."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from shipyard.inference.predictor import Predictor, frame_to_features, outputs_to_frame

DEFAULT_BATCH_ROWS = 8192


def score_frame(
    predictor: Predictor,
    frame: pd.DataFrame,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Predict every row; the result keeps the input's non-feature columns (ids, labels)."""
    features = frame_to_features(frame, predictor)
    parts = []
    for start in range(0, len(features), batch_rows):
        chunk = features[start : start + batch_rows]
        parts.append(outputs_to_frame(predictor.predict(chunk)))
        if progress is not None:
            progress(len(chunk))
    feature_names = set(predictor.input_schema["features"])
    kept = frame[[c for c in frame.columns if c not in feature_names]].reset_index(drop=True)
    scored = pd.concat(parts, ignore_index=True) if parts else outputs_to_frame({})
    return pd.concat([kept, scored], axis=1)

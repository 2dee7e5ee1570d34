"""Reference profiles: the statistics of training data that live traffic is compared against."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shipyard.data.schema import Column, TableSchema
from shipyard.errors import InvalidInputError

QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}

# A string column's profile keeps its most frequent values only; the rest are summed as "other".
_TOP_CATEGORIES = 20


def profile_frame(frame: pd.DataFrame, schema: TableSchema, *, bins: int = 20) -> dict[str, Any]:
    """A JSON-ready profile of ``frame``'s features and target, for drift checks later.

    For each numeric feature (``float64``, ``int64``, ``bool`` as 0/1): ``count`` (finite
    values), ``missing`` (NaN and ±inf), ``mean``, ``std`` (population, ddof=0), ``min``,
    ``max``, ``quantiles`` p01..p99, and a ``histogram`` with ``bins`` counts over ``bins + 1``
    edges: ``[min, p01, …equal steps…, p99, max]``. The first and last bins hold the tails; to
    compute PSI on live data, treat them as open-ended (replace the first and last edges with
    -inf and +inf) and bin with ``np.histogram``. The counts sum to ``count``. A feature with no
    finite value has ``None`` statistics and empty ``edges`` and ``counts``.

    A ``string`` feature has ``count``, ``missing`` and ``categories`` (fraction of each of the
    20 most frequent values, the rest under ``"other"``); its numeric statistics are ``None``.

    ``target`` is ``{"name", "classes": {label: fraction}}`` for an ``int64``, ``bool`` or
    ``string`` target (bool labels as "0"/"1"), ``{"name", "classes": None, "summary": {…}}``
    for a ``float64`` one, and ``None`` when the schema or the frame has no target.
    """
    if bins < 2:
        raise InvalidInputError(f"bins must be at least 2, got {bins}")
    frame = schema.validate_frame(frame, require_target=False)
    features = {
        column.name: _profile_column(column, frame[column.name], bins) for column in schema.features
    }
    target: dict[str, Any] | None = None
    if schema.target is not None and schema.target in frame.columns:
        target = _profile_target(schema.column(schema.target), frame[schema.target], bins)
    return {"rows": len(frame), "features": features, "target": target}


def _profile_column(column: Column, series: pd.Series[Any], bins: int) -> dict[str, Any]:
    if column.dtype == "string":
        return _profile_text(column, series)
    values = series.astype("float64").to_numpy()
    finite = values[np.isfinite(values)]
    profile: dict[str, Any] = {
        "dtype": column.dtype,
        "count": int(finite.size),
        "missing": int(values.size - finite.size),
    }
    if finite.size == 0:
        profile.update(
            mean=None,
            std=None,
            min=None,
            max=None,
            quantiles=dict.fromkeys(QUANTILES),
            histogram={"edges": [], "counts": []},
        )
        return profile
    quantiles = np.quantile(finite, list(QUANTILES.values()))
    low, high = float(finite.min()), float(finite.max())
    edges = np.concatenate(([low], np.linspace(quantiles[0], quantiles[-1], bins - 1), [high]))
    # Quantiles can round a hair outside [min, max]; edges must never decrease.
    edges = np.maximum.accumulate(np.clip(edges, low, high))
    counts, _ = np.histogram(finite, bins=edges)
    profile.update(
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=low,
        max=high,
        quantiles={name: float(q) for name, q in zip(QUANTILES, quantiles, strict=True)},
        histogram={"edges": [float(edge) for edge in edges], "counts": counts.tolist()},
    )
    return profile


def _profile_text(column: Column, series: pd.Series[Any]) -> dict[str, Any]:
    present = series.dropna()
    frequencies = present.value_counts(normalize=True)
    categories = {
        str(value): float(share) for value, share in frequencies.head(_TOP_CATEGORIES).items()
    }
    if len(frequencies) > _TOP_CATEGORIES:
        categories["other"] = float(frequencies.iloc[_TOP_CATEGORIES:].sum())
    return {
        "dtype": column.dtype,
        "count": int(present.size),
        "missing": int(series.size - present.size),
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "quantiles": dict.fromkeys(QUANTILES),
        "histogram": None,
        "categories": categories,
    }


def _profile_target(column: Column, series: pd.Series[Any], bins: int) -> dict[str, Any]:
    if column.dtype == "float64":
        return {
            "name": column.name,
            "classes": None,
            "summary": _profile_column(column, series, bins),
        }
    labels = series.dropna()
    if column.dtype == "bool":
        labels = labels.astype("int64")
    frequencies = labels.value_counts(normalize=True).sort_index()
    classes = {str(label): float(share) for label, share in frequencies.items()}
    return {"name": column.name, "classes": classes}

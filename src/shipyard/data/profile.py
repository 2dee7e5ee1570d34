"""Reference profiles: the statistics of training data that live traffic is compared against."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
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

# A numeric column with this many finite values or fewer keeps them all, sorted, as its sketch
# (drift checks of a reference this small use the KS test on the exact values, as Evidently
# does); a larger one keeps its quantile function at SKETCH_QUANTILES levels, spaced
# (1 - cos(πt)) / 2 so that they crowd at both tails: against the raw data (50,000 rows of
# normal, log-normal, exponential, uniform and 50-valued integer features, windows of 1,000)
# the normalised Wasserstein distance is then within 1e-3 and the KS statistic within 5e-3
# (3e-4 for continuous features) with 257 levels, about 5 KB of JSON; 1,001 evenly spaced
# levels are 4 times larger and 30 times less accurate on heavy tails (3e-2 on log-normal).
EXACT_SKETCH_MAX = 1000
SKETCH_QUANTILES = 257
# ``unique`` counts distinct finite values up to this cap (a capped count means "at least").
UNIQUE_CAP = 1000
# A numeric column with at most this many distinct values keeps their frequencies: Evidently
# treats such columns as categorical (integers with ≤ 10 values) or bins them by value (≤ 20).
NUMERIC_CATEGORIES_MAX = 20


def profile_frame(
    frame: pd.DataFrame,
    schema: TableSchema,
    *,
    bins: int = 20,
    scores: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """A JSON-ready profile of ``frame``'s features and target, for drift checks later.

    For each numeric feature (``float64``, ``int64``, ``bool`` as 0/1): ``count`` (finite
    values), ``missing`` (NaN and ±inf), ``mean``, ``std`` (population, ddof=0), ``min``,
    ``max``, ``quantiles`` p01..p99, and a ``histogram`` with ``bins`` counts over ``bins + 1``
    edges: ``[min, p01, …equal steps…, p99, max]``. The first and last bins hold the tails; to
    compute PSI on live data, treat them as open-ended (replace the first and last edges with
    -inf and +inf) and bin with ``np.histogram``. The counts sum to ``count``. A feature with no
    finite value has ``None`` statistics and empty ``edges`` and ``counts``.

    Drift checks against the profile alone (``shipyard.monitoring.drift``) also use, per
    numeric feature: ``unique``, the number of distinct finite values (at most ``UNIQUE_CAP``,
    which then means "at least"); ``sketch``, ``{"kind": "values", "values": [...]}`` with
    every finite value sorted when there are at most ``EXACT_SKETCH_MAX`` of them, otherwise
    ``{"kind": "quantiles", "values": [...]}``, the quantiles at the levels
    ``sketch_levels(len(values))``, from 0 (the minimum) to 1 (the maximum); and
    ``categories``, the fraction of each value (keys are the values written as numbers,
    ``"3"``, ``"0.5"``) when there are at most ``NUMERIC_CATEGORIES_MAX`` distinct values, else
    ``None``. Profiles written before
    these keys existed lack them; drift then falls back to the quantiles and histogram.

    A ``string`` feature has ``count``, ``missing`` and ``categories`` (fraction of each of the
    20 most frequent values, the rest under ``"other"``); its numeric statistics are ``None``.

    ``target`` is ``{"name", "classes": {label: fraction}}`` for an ``int64``, ``bool`` or
    ``string`` target (bool labels as "0"/"1"), ``{"name", "classes": None, "summary": {…}}``
    for a ``float64`` one, and ``None`` when the schema or the frame has no target.

    ``score`` is the numeric profile (as a ``float64`` feature) of ``scores``, the model's
    score on the same rows (P(positive class) of a binary classifier, the highest class
    probability of a multiclass one, a regressor's prediction), or ``None`` without scores.
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
    score: dict[str, Any] | None = None
    if scores is not None:
        score = profile_values(scores)
        if score["count"] + score["missing"] != len(frame):
            raise InvalidInputError(
                f"scores has {score['count'] + score['missing']} values for {len(frame)} rows; "
                "pass one score per row of the frame"
            )
    return {"rows": len(frame), "features": features, "target": target, "score": score}


def profile_values(values: npt.ArrayLike, *, bins: int = 20) -> dict[str, Any]:
    """The profile of one numeric column given as an array (e.g. a model's scores): the
    same keys as a ``float64`` feature of ``profile_frame``."""
    array = np.asarray(values, dtype="float64")
    if array.ndim != 1:
        raise InvalidInputError(f"values must be one-dimensional, got shape {array.shape}")
    if bins < 2:
        raise InvalidInputError(f"bins must be at least 2, got {bins}")
    return _profile_numbers("float64", array, bins)


def _profile_column(column: Column, series: pd.Series[Any], bins: int) -> dict[str, Any]:
    if column.dtype == "string":
        return _profile_text(column, series)
    return _profile_numbers(column.dtype, np.asarray(series, dtype=np.float64), bins)


def _profile_numbers(dtype: str, values: npt.NDArray[np.float64], bins: int) -> dict[str, Any]:
    finite = np.sort(values[np.isfinite(values)])
    profile: dict[str, Any] = {
        "dtype": dtype,
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
            unique=0,
            sketch={"kind": "values", "values": []},
            categories=None,
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
        **_distribution(finite),
    )
    return profile


def _distribution(ordered: npt.NDArray[np.float64]) -> dict[str, Any]:
    """``unique``, ``sketch`` and ``categories`` of sorted finite values (at least one)."""
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    categories: dict[str, float] | None = None
    if starts.size <= NUMERIC_CATEGORIES_MAX:
        counts = np.diff(np.append(starts, ordered.size))
        categories = {
            number_key(float(ordered[start])): float(count / ordered.size)
            for start, count in zip(starts, counts, strict=True)
        }
    if ordered.size <= EXACT_SKETCH_MAX:
        sketch = {"kind": "values", "values": ordered.tolist()}
    else:
        levels = sketch_levels(SKETCH_QUANTILES)
        # Interpolated quantiles can round a hair out of order; a quantile function never falls.
        quantiles = np.maximum.accumulate(np.quantile(ordered, levels))
        sketch = {"kind": "quantiles", "values": quantiles.tolist()}
    return {
        "unique": int(min(starts.size, UNIQUE_CAP)),
        "sketch": sketch,
        "categories": categories,
    }


def sketch_levels(size: int) -> npt.NDArray[np.float64]:
    """The levels of a quantile sketch of ``size`` values: ``(1 - cos(π i / (size - 1))) / 2``,
    0 and 1 at the ends, closest together at the tails."""
    levels = (1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, size))) / 2.0
    levels[0], levels[-1] = 0.0, 1.0
    return levels


def number_key(value: float) -> str:
    """How a numeric category is named in a profile: ``"3"`` for whole numbers, else the
    shortest repr (``"0.5"``); ``float(key)`` gives the value back."""
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


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

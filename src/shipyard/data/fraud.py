"""A synthetic card-transaction table shaped like the public credit-card fraud data set.

Columns are ``Time`` (seconds since the first transaction, over two days), ``V1``..``V28``
(anonymised, PCA-like components), ``Amount`` and ``Class`` (1 for fraud). Fraud rows differ
from normal ones in a handful of components and in the amount, with enough overlap that a good
model finds most fraud but not all of it.

``drift_fraud`` turns such a table into one that has drifted away from it (``DRIFT_SCENARIOS``),
so that the monitor can be seen to react.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.data.schema import Column, TableSchema
from shipyard.errors import InvalidInputError

_COMPONENTS = [f"V{i}" for i in range(1, 29)]

FRAUD_SCHEMA = TableSchema(
    columns=[
        Column(name="Time"),
        *(Column(name=name) for name in _COMPONENTS),
        Column(name="Amount"),
        Column(name="Class", dtype="int64"),
    ],
    target="Class",
)

_SECONDS = 2 * 24 * 3600.0

# PCA components come out ordered by variance: the first ones spread widest.
_SCALES = np.linspace(1.9, 0.35, len(_COMPONENTS))

# Mean shift of fraud rows, in units of each component's scale, at severity 1. As in the real
# data, V14, V12, V10 and V17 move most, then V4, V11 and V3; the other components do not move.
_FRAUD_SHIFT = {
    "V14": -2.6,
    "V12": -2.0,
    "V10": -1.8,
    "V17": -2.0,
    "V4": 1.5,
    "V11": 1.2,
    "V3": -1.2,
    "V7": -0.6,
    "V16": -0.8,
}
# Fraud rows spread wider than normal ones along every shifted component.
_FRAUD_SPREAD = 1.2
# Most fraud is blatant; a share is camouflaged close to normal traffic. That share is what keeps
# average precision near 0.8 instead of a perfect 1.0.
_SUBTLE_SHARE = 0.3
_SUBTLE_SEVERITY = (0.4, 0.9)
_BLATANT_SEVERITY = (1.5, 3.0)


def generate_fraud(rows: int, *, seed: int = 0, fraud_rate: float = 0.005) -> pd.DataFrame:
    """Generate ``rows`` card transactions, ``fraud_rate`` of them fraudulent, from ``seed``.

    The number of fraud rows is ``round(rows * fraud_rate)``, placed at random; the same
    arguments always give the same table.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidInputError(f"rows must be a whole number of at least 1, got {rows!r}")
    if not 0.0 < fraud_rate < 0.5:
        raise InvalidInputError(
            f"fraud_rate must be between 0 and 0.5 (exclusive), got {fraud_rate!r}; "
            "real card fraud is around 0.002-0.01"
        )
    rng = np.random.default_rng(seed)

    fraud = np.zeros(rows, dtype=bool)
    fraud[rng.choice(rows, size=round(rows * fraud_rate), replace=False)] = True
    n_fraud = int(fraud.sum())

    # One row per column: the frame below then wraps this block without copying it.
    values = np.empty((len(_COMPONENTS) + 2, rows))
    components = values[1:-1]
    rng.standard_normal(out=components)
    subtle = rng.random(n_fraud) < _SUBTLE_SHARE
    severity = np.where(
        subtle,
        rng.uniform(*_SUBTLE_SEVERITY, size=n_fraud),
        rng.uniform(*_BLATANT_SEVERITY, size=n_fraud),
    )
    for name, shift in _FRAUD_SHIFT.items():
        row = components[_COMPONENTS.index(name)]
        row[fraud] = row[fraud] * _FRAUD_SPREAD + shift * severity

    amount = _amounts(rng, fraud)
    # Some components carry the amount, as V7 and V20 do in the real data.
    log_amount = (np.log1p(amount) - 3.0) / 1.4
    components[6] += 0.4 * log_amount
    components[19] += 0.3 * log_amount
    components *= _SCALES[:, np.newaxis]
    values[0] = _times(rng, rows)
    values[-1] = amount

    frame = pd.DataFrame(values.T, columns=["Time", *_COMPONENTS, "Amount"], copy=False)
    frame["Class"] = fraud.astype("int64")
    return frame


def _times(rng: np.random.Generator, rows: int) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
    """Whole seconds over two days, increasing, busier by day than at night."""
    hour = np.arange(48)
    # Traffic peaks mid-afternoon and is lowest around 4 a.m.
    weight = 1.0 + 0.8 * np.sin((hour % 24 - 10.0) / 24.0 * 2.0 * np.pi)
    hours = rng.choice(48, size=rows, p=weight / weight.sum())
    seconds = hours * 3600.0 + rng.uniform(0.0, 3600.0, size=rows)
    return np.floor(np.sort(seconds)).clip(0.0, _SECONDS - 1.0)


def _amounts(
    rng: np.random.Generator, fraud: np.ndarray[tuple[int], np.dtype[np.bool_]]
) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
    """Log-normal amounts in currency units with cents; fraud is either tiny or large."""
    amount = rng.lognormal(mean=3.0, sigma=1.3, size=fraud.size)
    n_fraud = int(fraud.sum())
    # Card testing uses tiny amounts; cash-out uses large ones.
    testing = rng.random(n_fraud) < 0.45
    amount[fraud] = np.where(
        testing,
        rng.lognormal(mean=0.5, sigma=0.9, size=n_fraud),
        rng.lognormal(mean=4.6, sigma=1.0, size=n_fraud),
    )
    return np.maximum(np.round(amount, 2), 0.01)


DRIFT_SCENARIOS: dict[str, str] = {
    "mean-shift": "shift the mean of 30% of the features by 0.5 standard deviation",
    "variance": "widen the spread of 30% of the features 1.5 times around their mean",
    "few": "shift 2 features strongly (2 standard deviations)",
    "many": "shift the mean of 80% of the features by 0.5 standard deviation",
    "concept": (
        "label 2% of rows fraud that look like legitimate training rows (a new fraud "
        "pattern the current model misses); the features do not move"
    ),
    "new-fraud": (
        "shift the mean of 80% of the features by 0.5 standard deviation (as many) and turn "
        "the legitimate rows whose V2 and V9 are both high into fraud (about 3% of rows): "
        "the world moved and fraudsters found a new pattern"
    ),
}
# Per scenario: (strength, share of features). Strength is in standard deviations for the
# shifts, a factor for variance, the rate of new fraud rows for concept.
_DRIFT_DEFAULTS: dict[str, tuple[float, float]] = {
    "mean-shift": (0.5, 0.3),
    "variance": (1.5, 0.3),
    "few": (2.0, 2 / 29),
    "many": (0.5, 0.8),
    "concept": (0.02, 0.0),
    "new-fraud": (0.5, 0.8),
}
# The share of rows ``new-fraud`` turns into fraud. Its pattern is a corner (V2 and V9 both
# above the quantile that leaves this share of rows in it), which trees learn from a few
# dozen examples, so a model retrained on labelled drifted rows catches what the old one
# cannot: the corner holds no fraud in the generator's data.
_NEW_FRAUD_RATE = 0.03
# Time is a timestamp, not a feature that drifts. The affected features are the first ones of
# this fixed order, so a scenario moves the same features whatever the seed.
_DRIFTABLE = [*_COMPONENTS, "Amount"]
_DRIFT_ORDER = [_DRIFTABLE[i] for i in np.random.default_rng(2024).permutation(len(_DRIFTABLE))]


def drifted_features(scenario: str, share: float | None = None) -> list[str]:
    """The features ``drift_fraud`` moves for ``scenario`` (none for ``concept``)."""
    _check_scenario(scenario)
    if scenario == "concept":
        return []
    share = _DRIFT_DEFAULTS[scenario][1] if share is None else share
    if not 0.0 < share <= 1.0:
        raise InvalidInputError(f"drift share of features must be in (0, 1], got {share!r}")
    return _DRIFT_ORDER[: max(1, round(share * len(_DRIFT_ORDER)))]


def drift_fraud(
    frame: pd.DataFrame,
    scenario: str,
    *,
    strength: float | None = None,
    share: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A copy of ``frame`` (a ``generate_fraud`` table) drifted by ``scenario``.

    Covariate drift moves ``share`` of the features (``drifted_features``): ``mean-shift``,
    ``few`` and ``many`` add ``strength`` standard deviations (of the column in ``frame``,
    with a sign drawn from ``seed``); ``variance`` scales each value's distance to the
    column's mean by ``strength``. ``Amount`` moves in log space, so it stays positive.
    ``concept`` leaves every feature as it is and relabels a ``strength`` share of the rows
    fraud, drawn among legitimate rows with a high ``V2`` and ``V9`` (components the
    generator's fraud never moves): fraud the current model does not see. ``new-fraud``
    moves the features as ``many`` does, then relabels fraud every legitimate row whose
    ``V2`` and ``V9`` both lie in their top ``sqrt(0.03)`` (about 3 % of the rows): a
    pattern a model trained on the drifted rows' labels learns and the current one misses.
    """
    features = drifted_features(scenario, share)
    default_strength = _DRIFT_DEFAULTS[scenario][0]
    strength = default_strength if strength is None else strength
    if not np.isfinite(strength) or strength <= 0:
        raise InvalidInputError(f"drift strength must be a positive number, got {strength!r}")
    rng = np.random.default_rng([seed, 1])
    drifted = frame.copy()
    if scenario == "concept":
        if strength >= 0.5:
            raise InvalidInputError(
                f"concept drift strength is the rate of new fraud rows, below 0.5; got {strength!r}"
            )
        legit = (drifted["Class"] == 0).to_numpy()
        pattern = (
            legit
            & (drifted["V2"] > drifted["V2"].quantile(0.5)).to_numpy()
            & (drifted["V9"] > drifted["V9"].quantile(0.5)).to_numpy()
        )
        candidates = np.flatnonzero(pattern)
        chosen = rng.choice(
            candidates, size=min(round(strength * len(frame)), candidates.size), replace=False
        )
        labels = drifted["Class"].to_numpy(copy=True)
        labels[chosen] = 1
        drifted["Class"] = labels
        return drifted
    for name in features:
        amount = name == "Amount"
        values = drifted[name].to_numpy(dtype=np.float64)
        values = np.log(values) if amount else values
        if scenario == "variance":
            values = values.mean() + (values - values.mean()) * strength
        else:
            sign = 1.0 if amount else rng.choice([-1.0, 1.0])
            values = values + sign * strength * values.std()
        drifted[name] = np.maximum(np.round(np.exp(values), 2), 0.01) if amount else values
    if scenario == "new-fraud":
        corner = np.ones(len(drifted), dtype=bool)
        for name in ("V2", "V9"):
            column = drifted[name]
            corner &= (column > column.quantile(1.0 - np.sqrt(_NEW_FRAUD_RATE))).to_numpy()
        labels = drifted["Class"].to_numpy(copy=True)
        labels[corner] = 1
        drifted["Class"] = labels
    return drifted


def _check_scenario(scenario: str) -> None:
    if scenario not in DRIFT_SCENARIOS:
        raise InvalidInputError(
            f"unknown drift scenario {scenario!r}; use one of {', '.join(DRIFT_SCENARIOS)}"
        )

"""A synthetic card-transaction table shaped like the public credit-card fraud data set.

Columns are ``Time`` (seconds since the first transaction, over two days), ``V1``..``V28``
(anonymised, PCA-like components), ``Amount`` and ``Class`` (1 for fraud). Fraud rows differ
from normal ones in a handful of components and in the amount, with enough overlap that a good
model finds most fraud but not all of it.
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

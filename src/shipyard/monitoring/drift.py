"""Drift of live data against a version's reference profile, by Evidently's default rules.

``detect_drift`` compares a window of live rows with the profile ``shipyard.data.profile``
stored with the version: no raw training data is needed at serving time. The rules are those
of Evidently 0.7's ``DataDriftPreset`` (``evidently.legacy.calculations.stattests``):

- a feature is categorical when its profile's dtype is ``bool``, or ``int64`` with at most 10
  distinct values (Evidently's ``infer_column_type``); otherwise numeric;
- reference of at most 1,000 values: numeric → two-sample Kolmogorov–Smirnov, drift when
  p ≤ 0.05; categorical → chi-squared goodness of fit (z-test of two proportions when at most
  two distinct values), drift when p < 0.05;
- larger reference: numeric → Wasserstein distance divided by the reference's standard
  deviation, drift when ≥ 0.1; categorical → Jensen–Shannon distance, drift when ≥ 0.1;
- a numeric feature with at most 5 distinct values in reference and window together is tested
  as categorical; PSI (≥ 0.1) and the others can be chosen per model and per feature.

A reference of at most 1,000 values is stored exactly, so the small-reference tests equal
scipy's on the raw data. A larger one is a quantile function (257 levels, crowded at the
tails; ``shipyard.data.profile`` says how accurate that is): the reference's
CDF is taken as linear between quantiles, KS's statistic is read from it and its p-value is
Smirnov's asymptotic one with the reference's true size (``scipy.stats.kstwo``, as
``ks_2samp`` does for large samples), and Wasserstein is the exact distance to that CDF.
A profile written before sketches existed has only 7 quantiles and a 20-bin histogram: its
features are tested from those, and their ``note`` says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from shipyard.data.profile import sketch_levels
from shipyard.errors import InvalidInputError

DriftMethod = Literal["ks", "wasserstein", "chisquare", "jensenshannon", "psi", "z"]
FeatureKind = Literal["numeric", "categorical"]


def scipy_stats() -> Any:
    """``scipy.stats``, imported on first use (about half a second): a server that only
    predicts need not spend it at start."""
    from scipy import stats

    return stats


def scipy_distance() -> Any:
    """``scipy.spatial.distance``, imported on first use."""
    from scipy.spatial import distance

    return distance


METHODS: tuple[DriftMethod, ...] = get_args(DriftMethod)
# Evidently's default threshold of each method: a p-value for ks, chisquare and z (drift
# below it), a distance for the others (drift at or above it).
DEFAULT_THRESHOLDS: dict[DriftMethod, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
P_VALUE_METHODS: frozenset[DriftMethod] = frozenset({"ks", "chisquare", "z"})
# Evidently's "small reference": up to this many values, KS and chi-squared; above, distances.
SMALL_REFERENCE = 1000
# Evidently's ``INTEGER_CARDINALITY_LIMIT``: an integer column with at most this many distinct
# values is categorical.
INTEGER_CATEGORIES_MAX = 10
# A numeric feature with at most this many distinct values (reference and window together) is
# tested as categorical.
NUMERIC_AS_CATEGORICAL_MAX = 5
# PSI and Jensen–Shannon bin a numeric feature with more distinct values than this (Sturges'
# bins over both samples); fewer are compared value by value.
BINNED_MIN_UNIQUE = 20

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DriftRule:
    """How one feature (or every feature) is tested; ``None`` keeps Evidently's choice."""

    method: DriftMethod | None = None
    # A p-value for ks, chisquare and z, a distance for the others.
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in METHODS:
            raise InvalidInputError(
                f"unknown drift method {self.method!r}; use one of {', '.join(METHODS)}"
            )
        if self.threshold is not None:
            threshold = self.threshold
            if (
                isinstance(threshold, bool)
                or not isinstance(threshold, int | float)
                or not math.isfinite(threshold)
                or threshold <= 0
            ):
                raise InvalidInputError(
                    f"drift threshold must be a positive number, got {threshold!r}"
                )
            if self.method in P_VALUE_METHODS and threshold >= 1:
                raise InvalidInputError(
                    f"the {self.method} threshold is a p-value and must be below 1, "
                    f"got {threshold!r}"
                )

    @classmethod
    def from_mapping(cls, data: Any, where: str = "drift") -> DriftRule:
        """A rule from ``{"method": ..., "threshold": ...}``; errors name ``where``."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{where} must be a mapping with method and/or threshold")
        unknown = sorted(set(map(str, data)) - {"method", "threshold"})
        if unknown:
            raise InvalidInputError(
                f"unknown key {where}.{unknown[0]}; a drift rule has method and threshold"
            )
        try:
            return cls(method=data.get("method"), threshold=data.get("threshold"))
        except InvalidInputError as error:
            raise InvalidInputError(f"{where}: {error}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The rule's set fields."""
        return {
            key: value
            for key, value in (("method", self.method), ("threshold", self.threshold))
            if value is not None
        }


@dataclass(frozen=True)
class DriftConfig:
    """A model's drift rules: a default, per-feature overrides, and the dataset verdict's
    share of drifted features (Evidently's ``drift_share``)."""

    default: DriftRule = DriftRule()
    features: Mapping[str, DriftRule] = field(default_factory=dict)
    drift_share: float = 0.5

    def __post_init__(self) -> None:
        share = self.drift_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise InvalidInputError(
                f"drift_share must be a fraction above 0 and at most 1, got {share!r}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> DriftConfig:
        """A config from ``{"method", "threshold", "drift_share", "features": {name: rule}}``
        (every key optional; ``None`` is the default config)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInputError("drift must be a mapping of method, threshold, drift_share")
        unknown = sorted(set(map(str, data)) - {"method", "threshold", "drift_share", "features"})
        if unknown:
            raise InvalidInputError(
                f"unknown key drift.{unknown[0]}; use method, threshold, drift_share, features"
            )
        default = DriftRule.from_mapping(
            {key: data[key] for key in ("method", "threshold") if key in data}
        )
        features = data.get("features") or {}
        if not isinstance(features, Mapping):
            raise InvalidInputError("drift.features must map feature names to rules")
        rules = {
            str(name): DriftRule.from_mapping(rule, f"drift.features.{name}")
            for name, rule in features.items()
        }
        try:
            return cls(default=default, features=rules, drift_share=data.get("drift_share", 0.5))
        except InvalidInputError as error:
            raise InvalidInputError(f"drift.drift_share: {error}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The config as ``from_mapping`` reads it."""
        mapping: dict[str, Any] = {**self.default.to_mapping(), "drift_share": self.drift_share}
        if self.features:
            mapping["features"] = {name: rule.to_mapping() for name, rule in self.features.items()}
        return mapping


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test: ``statistic`` is the p-value for ks, chisquare and z (drift when
    ``statistic`` falls below ``threshold``; at or below for ks, as in Evidently) and the
    distance otherwise (drift at or above). ``rows`` counts the window's values used;
    ``note`` says when the reference was only approximately known."""

    feature: str
    kind: FeatureKind
    method: DriftMethod
    statistic: float
    threshold: float
    drifted: bool
    rows: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class DatasetDrift:
    """A window's drift: each tested feature, the model's score, and the dataset verdict
    (``share`` of tested features drifted ≥ ``drift_share``). ``skipped`` names the
    features that could not be tested and why (absent from the profile, no values, …)."""

    features: dict[str, FeatureDrift]
    score: FeatureDrift | None
    share: float
    drift_share: float
    drifted: bool
    rows: int
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "features": {name: drift.to_dict() for name, drift in self.features.items()},
            "score": None if self.score is None else self.score.to_dict(),
            "share": self.share,
            "drift_share": self.drift_share,
            "drifted": self.drifted,
            "rows": self.rows,
            "skipped": dict(self.skipped),
        }


def detect_drift(
    profile: Mapping[str, Any],
    names: Sequence[str],
    window: npt.ArrayLike,
    config: DriftConfig = DriftConfig(),
    scores: npt.ArrayLike | None = None,
) -> DatasetDrift:
    """Test each column of ``window`` (live rows × ``names``; NaN and ±inf are missing and
    ignored) against the feature of that name in ``profile``, and ``scores`` against the
    profile's ``score``. Features the profile lacks, string features and columns without a
    finite value are left out of ``features`` and listed in ``skipped``."""
    matrix = np.asarray(window, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise InvalidInputError(
            f"window must be a matrix of rows × {len(names)} features, got shape {matrix.shape}"
        )
    rows = matrix.shape[0]
    reference = profile.get("features") or {}
    results: dict[str, FeatureDrift] = {}
    skipped: dict[str, str] = {}
    # NaN (and ±inf, made NaN) sort last: each column's finite values come first, in order.
    ordered = np.sort(np.where(np.isfinite(matrix), matrix, np.nan), axis=0)
    present = np.count_nonzero(np.isfinite(matrix), axis=0)
    for index, name in enumerate(names):
        feature = reference.get(name)
        if feature is None:
            skipped[name] = "not in the reference profile"
            continue
        rule = config.features.get(name, config.default)
        outcome = _feature_drift(name, feature, ordered[: present[index], index], rule)
        if isinstance(outcome, str):
            skipped[name] = outcome
        else:
            results[name] = outcome
    score: FeatureDrift | None = None
    if scores is not None and profile.get("score"):
        values = np.asarray(scores, dtype=np.float64)
        if values.shape != (rows,):
            raise InvalidInputError(
                f"scores must hold one value per window row ({rows}), got shape {values.shape}"
            )
        outcome = _feature_drift(
            "score", profile["score"], np.sort(values[np.isfinite(values)]), config.default
        )
        if isinstance(outcome, str):
            skipped["score"] = outcome
        else:
            score = outcome
    drifted = sum(result.drifted for result in results.values())
    share = drifted / len(results) if results else 0.0
    return DatasetDrift(
        features=results,
        score=score,
        share=share,
        drift_share=config.drift_share,
        drifted=bool(results) and share >= config.drift_share,
        rows=rows,
        skipped=skipped,
    )


@dataclass(frozen=True)
class _Reference:
    """One feature's reference distribution as the profile knows it."""

    count: int
    std: float
    minimum: float
    maximum: float
    # The exact sorted values (small reference), else None.
    values: Float64Array | None
    # The quantile function: strictly increasing levels and non-decreasing quantiles.
    levels: Float64Array
    quantiles: Float64Array
    # Distinct values and their counts when the profile has them (few distinct values).
    keys: npt.NDArray[np.float32] | None
    counts: Float64Array | None
    unique: int | None
    note: str | None


def _feature_drift(
    name: str, feature: Mapping[str, Any], current: Float64Array, rule: DriftRule
) -> FeatureDrift | str:
    """Test one feature, or say why it cannot be tested."""
    if feature.get("dtype") == "string":
        return "a string feature: the window carries numbers only"
    if not feature.get("count"):
        return "no finite value in the reference"
    if current.size == 0:
        return "no finite value in the window"
    reference = _reference(feature)
    categorical = feature.get("dtype") == "bool" or (
        feature.get("dtype") == "int64"
        and reference.unique is not None
        and reference.unique <= INTEGER_CATEGORIES_MAX
    )
    kind: FeatureKind = "categorical" if categorical and reference.keys is not None else "numeric"
    keys, ref_counts, cur_counts = _joint_counts(reference, current)
    method = rule.method or _default_method(kind, reference, keys)
    threshold = rule.threshold if rule.threshold is not None else DEFAULT_THRESHOLDS[method]
    if method in ("chisquare", "z") and keys is None:
        return (
            f"{method} needs the reference's value frequencies, which the profile keeps for "
            "features with at most 20 distinct values; choose ks, wasserstein, psi or "
            "jensenshannon for this feature"
        )
    statistic = _statistic(method, reference, current, ref_counts, cur_counts)
    if method == "ks":
        drifted = statistic <= threshold
    elif method in P_VALUE_METHODS:
        drifted = statistic < threshold
    else:
        drifted = statistic >= threshold
    return FeatureDrift(
        feature=name,
        kind=kind,
        method=method,
        statistic=float(statistic),
        threshold=float(threshold),
        drifted=bool(drifted),
        rows=int(current.size),
        note=reference.note,
    )


def _default_method(
    kind: FeatureKind, reference: _Reference, keys: npt.NDArray[np.float32] | None
) -> DriftMethod:
    """Evidently's ``_get_default_stattest``."""
    small = reference.count <= SMALL_REFERENCE
    few = keys is not None and keys.size <= NUMERIC_AS_CATEGORICAL_MAX
    if kind == "categorical" or few:
        if not small:
            return "jensenshannon"
        return "chisquare" if keys is not None and keys.size > 2 else "z"
    return "ks" if small else "wasserstein"


def _reference(feature: Mapping[str, Any]) -> _Reference:
    count = int(feature["count"])
    sketch = feature.get("sketch")
    values: Float64Array | None = None
    note: str | None = None
    if sketch is not None and sketch.get("kind") == "values":
        values = np.asarray(sketch["values"], dtype=np.float64)
        levels = np.linspace(0.0, 1.0, values.size) if values.size > 1 else np.array([0.0, 1.0])
        quantiles = values if values.size > 1 else np.repeat(values, 2)
    elif sketch is not None:
        quantiles = np.asarray(sketch["values"], dtype=np.float64)
        levels = sketch_levels(quantiles.size)
    else:
        levels, quantiles = _legacy_quantile_function(feature)
        note = "reference profile has no sketch: estimated from its quantiles and histogram"
    keys: npt.NDArray[np.float32] | None = None
    counts: Float64Array | None = None
    categories = feature.get("categories")
    if categories:
        keys = np.asarray([float(key) for key in categories], dtype=np.float32)
        order = np.argsort(keys)
        keys = keys[order]
        counts = np.round(np.asarray(list(categories.values()), dtype=np.float64) * count)[order]
    unique = feature.get("unique")
    return _Reference(
        count=count,
        std=float(feature["std"]),
        minimum=float(feature["min"]),
        maximum=float(feature["max"]),
        values=values,
        levels=levels,
        quantiles=quantiles,
        keys=keys,
        counts=counts,
        unique=None if unique is None else int(unique),
        note=note,
    )


def _legacy_quantile_function(feature: Mapping[str, Any]) -> tuple[Float64Array, Float64Array]:
    """A quantile function from an old profile: min, p01..p99, max and the histogram's
    cumulative counts at its edges."""
    points = {0.0: float(feature["min"]), 1.0: float(feature["max"])}
    levels = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
    levels["p99"] = 0.99
    for key, level in levels.items():
        value = (feature.get("quantiles") or {}).get(key)
        if value is not None:
            points[level] = float(value)
    histogram = feature.get("histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    if len(edges) > 2 and sum(counts) > 0:
        cumulative = np.cumsum(counts)[:-1] / sum(counts)
        for edge, level in zip(edges[1:-1], cumulative, strict=True):
            points.setdefault(float(level), float(edge))
    level_array = np.asarray(sorted(points), dtype=np.float64)
    quantile_array = np.maximum.accumulate([points[level] for level in sorted(points)])
    return level_array, np.asarray(quantile_array, dtype=np.float64)


def _joint_counts(
    reference: _Reference, current: Float64Array
) -> tuple[npt.NDArray[np.float32] | None, Float64Array | None, Float64Array | None]:
    """The distinct values of reference and window together, and each side's counts of them,
    when the reference's values are known (compared in float32: the model's precision)."""
    if reference.keys is None or reference.counts is None:
        return None, None, None
    seen, seen_counts = np.unique(current.astype(np.float32), return_counts=True)
    keys = np.union1d(reference.keys, seen)
    ref_counts = np.zeros(keys.size)
    ref_counts[np.searchsorted(keys, reference.keys)] = reference.counts
    cur_counts = np.zeros(keys.size)
    cur_counts[np.searchsorted(keys, seen)] = seen_counts
    return keys, ref_counts, cur_counts


def _statistic(
    method: DriftMethod,
    reference: _Reference,
    current: Float64Array,
    ref_counts: Float64Array | None,
    cur_counts: Float64Array | None,
) -> float:
    if method == "ks":
        return _ks_p_value(reference, current)
    if method == "wasserstein":
        return _wasserstein(reference, current) / max(reference.std, 0.001)
    if method in ("chisquare", "z"):
        assert ref_counts is not None
        assert cur_counts is not None
        if method == "z":
            return _z_p_value(ref_counts, cur_counts)
        return _chisquare_p_value(ref_counts, cur_counts)
    # PSI and Jensen–Shannon: value by value for few distinct values, else Sturges' bins.
    if ref_counts is not None and cur_counts is not None:
        ref_share, cur_share = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    else:
        ref_share, cur_share = _binned_shares(reference, current)
    if method == "jensenshannon":
        return float(scipy_distance().jensenshannon(ref_share, cur_share))
    ref_share, cur_share = _fill_zeros(ref_share), _fill_zeros(cur_share)
    return float(np.sum((ref_share - cur_share) * np.log(ref_share / cur_share)))


def _ks_p_value(reference: _Reference, current: Float64Array) -> float:
    if reference.values is not None:
        # The exact reference: scipy's test itself (exact p-value up to 10,000 values; it
        # falls back to the asymptotic one, with a warning, when the exact one fails).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(scipy_stats().ks_2samp(reference.values, current).pvalue)
    n = current.size
    steps = np.arange(1, n + 1) / n
    above = steps - _cdf(reference, current, "right")
    below = _cdf(reference, current, "left") - (steps - 1.0 / n)
    statistic = max(float(above.max()), float(below.max()), 0.0)
    larger, smaller = max(reference.count, n), min(reference.count, n)
    effective = round(larger * smaller / (larger + smaller))
    return float(np.clip(scipy_stats().kstwo.sf(statistic, effective), 0.0, 1.0))


def _cdf(reference: _Reference, x: Float64Array, side: Literal["left", "right"]) -> Float64Array:
    """The reference CDF (linear between quantiles) at ``x``, or its left limit."""
    q, p = reference.quantiles, reference.levels
    after = np.searchsorted(q, x, side=side)
    low = np.clip(after - 1, 0, q.size - 1)
    high = np.clip(after, 0, q.size - 1)
    span = q[high] - q[low]
    fraction = np.divide(x - q[low], span, out=np.zeros_like(x), where=span > 0)
    cdf = p[low] + fraction * (p[high] - p[low])
    return np.where(after == 0, 0.0, np.where(after == q.size, 1.0, cdf))


def _wasserstein(reference: _Reference, current: Float64Array) -> float:
    """W1 = ∫₀¹ |F⁻¹(u) − G⁻¹(u)| du, exact for the reference's piecewise-linear quantile
    function against the window's step one."""
    if reference.values is not None:
        return float(scipy_stats().wasserstein_distance(reference.values, current))
    n = current.size
    grid = np.union1d(reference.levels, np.arange(n + 1) / n)
    start, end = grid[:-1], grid[1:]
    step = current[np.clip(np.ceil((start + end) / 2 * n).astype(np.int64) - 1, 0, n - 1)]
    gap_start = np.interp(start, reference.levels, reference.quantiles) - step
    gap_end = np.interp(end, reference.levels, reference.quantiles) - step
    width = end - start
    # Where the gap changes sign inside a step, it is two triangles.
    same_sign = gap_start * gap_end >= 0
    crossing = np.divide(
        gap_start**2 + gap_end**2,
        2 * np.abs(gap_start - gap_end),
        out=np.zeros_like(width),
        where=~same_sign,
    )
    area = width * np.where(same_sign, np.abs(gap_start + gap_end) / 2, crossing)
    return float(area.sum())


def _binned_shares(
    reference: _Reference, current: Float64Array
) -> tuple[Float64Array, Float64Array]:
    """Both samples' shares in Sturges' equal-width bins over both (Evidently's
    ``get_binned_data`` for numeric features with more than 20 distinct values)."""
    low = min(reference.minimum, float(current[0]))
    high = max(reference.maximum, float(current[-1]))
    total = reference.count + current.size
    if high > low:
        width = (high - low) / (np.log2(total) + 1.0)
        bins = max(int(np.ceil((high - low) / width)), 1)
    else:
        low, high, bins = low - 0.5, high + 0.5, 1
    edges = np.linspace(low, high, bins + 1)
    if reference.values is not None:
        ref_share = np.histogram(reference.values, edges)[0] / reference.values.size
    else:
        cdf = _cdf(reference, edges, "left")
        cdf[0], cdf[-1] = 0.0, 1.0
        ref_share = np.diff(cdf)
    return ref_share, np.histogram(current, edges)[0] / current.size


def _fill_zeros(shares: Float64Array) -> Float64Array:
    """Evidently's stand-in for empty bins in PSI: a millionth of the smallest share when
    that is at most 0.0001, else 0.0001."""
    smallest = float(shares[shares > 0].min())
    return np.where(shares == 0, smallest / 1e6 if smallest <= 0.0001 else 0.0001, shares)


def _chisquare_p_value(ref_counts: Float64Array, cur_counts: Float64Array) -> float:
    """Goodness of fit of the window's counts to the reference's proportions."""
    if ref_counts.size < 2:
        return 1.0
    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    if np.any((expected == 0) & (cur_counts > 0)):
        return 0.0
    seen = expected > 0
    statistic = float(np.sum((cur_counts[seen] - expected[seen]) ** 2 / expected[seen]))
    return float(scipy_stats().chi2.sf(statistic, ref_counts.size - 1))


def _z_p_value(ref_counts: Float64Array, cur_counts: Float64Array) -> float:
    """Two-proportion z-test of "not the smallest value" (Evidently's ``z`` test)."""
    if ref_counts.size < 2:
        return 1.0
    n_ref, n_cur = ref_counts.sum(), cur_counts.sum()
    p_ref = (n_ref - ref_counts[0]) / n_ref
    p_cur = (n_cur - cur_counts[0]) / n_cur
    pooled = (p_ref * n_ref + p_cur * n_cur) / (n_ref + n_cur)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (p_ref - p_cur) / math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    return float(2 * (1 - scipy_stats().norm.cdf(abs(z))))

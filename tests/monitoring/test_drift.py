"""Drift from the profile alone equals scipy's tests on the raw data (within the stated
tolerances for a quantile sketch), and the verdicts follow Evidently's default rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from shipyard.data import Column, TableSchema, profile_frame
from shipyard.errors import InvalidInputError
from shipyard.monitoring.drift import (
    DatasetDrift,
    DriftConfig,
    DriftRule,
    FeatureDrift,
    detect_drift,
)

# A quantile sketch (references over 1,000 values) stands for the raw data within these.
SKETCH_WASSERSTEIN_TOLERANCE = 2e-3  # normalised distance (threshold 0.1)
SKETCH_KS_STATISTIC_TOLERANCE = 2e-3  # continuous features
SKETCH_KS_P_TOLERANCE = 0.02  # against ks_2samp's asymptotic p-value
SKETCH_PSI_TOLERANCE = 0.01
RNG_SEED = 7


def _profile(columns: dict[str, np.ndarray], dtypes: dict[str, str] | None = None) -> Any:
    dtypes = dtypes or {}
    schema = TableSchema(
        columns=[
            Column(name=name, dtype=dtypes.get(name, "float64"), nullable=True) for name in columns
        ]
    )
    return profile_frame(pd.DataFrame(columns), schema)


def _one(
    reference: np.ndarray,
    current: np.ndarray,
    rule: DriftRule | None = None,
    dtype: str = "float64",
) -> FeatureDrift:
    profile = _profile({"x": reference}, {"x": dtype})
    config = DriftConfig(default=rule or DriftRule())
    result = detect_drift(profile, ["x"], current.reshape(-1, 1).astype(np.float64), config)
    return result.features["x"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


# --- statistics against scipy on the raw data ------------------------------------------------


@pytest.mark.parametrize("size", [50, 800, 1000])
def test_small_reference_ks_equals_scipy(rng: np.random.Generator, size: int) -> None:
    reference = rng.normal(size=size)
    current = rng.normal(0.1, 1.0, size=1000)
    drift = _one(reference, current)
    assert drift.method == "ks"
    assert drift.statistic == pytest.approx(stats.ks_2samp(reference, current).pvalue, abs=1e-12)
    assert drift.threshold == 0.05


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, shift: rng.normal(shift, 1.0, size=20_000),
        lambda rng, shift: rng.lognormal(3.0 + shift, 1.3, size=20_000),
        lambda rng, shift: rng.exponential(1.0 + shift, size=20_000),
    ],
    ids=["normal", "lognormal", "exponential"],
)
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.2])
def test_large_reference_wasserstein_and_ks_match_scipy(
    rng: np.random.Generator, make: Any, shift: float
) -> None:
    reference = make(rng, 0.0)
    current = make(rng, shift)[:1000]
    wasserstein = _one(reference, current)
    assert wasserstein.method == "wasserstein"
    expected = stats.wasserstein_distance(reference, current) / reference.std()
    assert wasserstein.statistic == pytest.approx(expected, abs=SKETCH_WASSERSTEIN_TOLERANCE)

    ks = _one(reference, current, DriftRule(method="ks"))
    raw = stats.ks_2samp(reference, current, method="asymp")
    assert ks.statistic == pytest.approx(raw.pvalue, abs=SKETCH_KS_P_TOLERANCE)
    # The p-value's statistic: invert Smirnov's distribution at the sketch's p-value.
    effective = round(20_000 * 1000 / 21_000)
    if 1e-6 < ks.statistic < 1 - 1e-6:
        statistic = stats.kstwo.isf(ks.statistic, effective)
        assert statistic == pytest.approx(raw.statistic, abs=SKETCH_KS_STATISTIC_TOLERANCE)


def test_small_reference_wasserstein_equals_scipy(rng: np.random.Generator) -> None:
    reference, current = rng.normal(size=600), rng.normal(0.3, 1.0, size=1000)
    drift = _one(reference, current, DriftRule(method="wasserstein"))
    expected = stats.wasserstein_distance(reference, current) / reference.std()
    assert drift.statistic == pytest.approx(expected, rel=1e-12)


def test_categorical_chisquare_equals_scipy(rng: np.random.Generator) -> None:
    reference = rng.choice(4, size=900, p=[0.4, 0.3, 0.2, 0.1])
    current = rng.choice(4, size=1000, p=[0.35, 0.3, 0.2, 0.15])
    drift = _one(reference.astype(float), current.astype(float), dtype="int64")
    assert (drift.kind, drift.method) == ("categorical", "chisquare")
    ref_counts, cur_counts = np.bincount(reference), np.bincount(current)
    expected = stats.chisquare(cur_counts, ref_counts * current.size / reference.size).pvalue
    assert drift.statistic == pytest.approx(expected, rel=1e-9)


def test_new_category_in_the_window_is_drift(rng: np.random.Generator) -> None:
    reference = rng.choice(3, size=900).astype(float)
    current = np.append(rng.choice(3, size=990), [3] * 10).astype(float)
    drift = _one(reference, current, dtype="int64")
    assert drift.method == "chisquare"
    assert drift.statistic == 0.0
    assert drift.drifted


def test_binary_small_reference_uses_the_z_test(rng: np.random.Generator) -> None:
    reference = rng.random(500) < 0.3
    current = rng.random(1000) < 0.38
    drift = _one(reference.astype(float), current.astype(float), dtype="bool")
    assert (drift.kind, drift.method) == ("categorical", "z")
    # The pooled two-proportion z-test is the 2×2 chi-squared test without continuity correction.
    table = [
        [reference.sum(), reference.size - reference.sum()],
        [current.sum(), current.size - current.sum()],
    ]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert drift.statistic == pytest.approx(expected, rel=1e-9)


def test_categorical_large_reference_jensenshannon_equals_scipy(rng: np.random.Generator) -> None:
    reference = rng.choice(6, size=5000, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    current = rng.choice(6, size=1000)
    drift = _one(reference.astype(float), current.astype(float), dtype="int64")
    assert (drift.kind, drift.method) == ("categorical", "jensenshannon")
    expected = distance.jensenshannon(
        np.bincount(reference) / reference.size, np.bincount(current) / current.size
    )
    assert drift.statistic == pytest.approx(expected, rel=1e-9)
    assert drift.drifted


def test_numeric_psi_from_the_sketch_matches_raw_sturges_bins(rng: np.random.Generator) -> None:
    reference, current = rng.normal(size=20_000), rng.normal(0.2, 1.1, size=1000)
    drift = _one(reference, current, DriftRule(method="psi"))
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    ref_share = np.histogram(reference, edges)[0] / reference.size
    cur_share = np.histogram(current, edges)[0] / current.size
    ref_share[ref_share == 0] = 0.0001
    cur_share[cur_share == 0] = 0.0001
    expected = np.sum((ref_share - cur_share) * np.log(ref_share / cur_share))
    assert drift.statistic == pytest.approx(expected, abs=SKETCH_PSI_TOLERANCE)
    assert drift.threshold == 0.1


def test_few_valued_float_feature_is_tested_as_categorical(rng: np.random.Generator) -> None:
    reference = rng.choice([0.5, 1.5, 2.5], size=3000)
    drift = _one(reference, rng.choice([0.5, 1.5, 2.5], size=1000))
    assert (drift.kind, drift.method) == ("numeric", "jensenshannon")
    assert not drift.drifted


# --- verdicts ---------------------------------------------------------------------------------


def _table(rng: np.random.Generator, rows: int, shift: np.ndarray | None = None) -> np.ndarray:
    data = rng.normal(size=(rows, 10)) * np.arange(1, 11)
    if shift is not None:
        data = data + shift * np.arange(1, 11)
    return data


@pytest.mark.parametrize("reference_rows", [800, 20_000])
def test_shifted_window_is_flagged_and_an_undrifted_one_is_not(
    rng: np.random.Generator, reference_rows: int
) -> None:
    names = [f"f{i}" for i in range(10)]
    profile = _profile(dict(zip(names, _table(rng, reference_rows).T, strict=True)))
    calm = detect_drift(profile, names, _table(rng, 1000))
    assert isinstance(calm, DatasetDrift)
    assert not calm.drifted
    assert calm.share < 0.5
    assert list(calm.features) == names
    shift = np.where(np.arange(10) < 6, 0.5, 0.0)
    moved = detect_drift(profile, names, _table(rng, 1000, shift))
    assert moved.drifted
    # KS at p ≤ 0.05 may flag an unshifted feature now and then; every shifted one is flagged.
    assert set(names[:6]) <= {name for name, f in moved.features.items() if f.drifted}
    assert moved.share >= 0.6
    assert moved.rows == 1000
    assert moved.to_dict()["features"]["f0"]["drifted"] is True


def test_missing_values_are_ignored_and_absent_features_skipped(rng: np.random.Generator) -> None:
    profile = _profile({"a": rng.normal(size=3000), "s": rng.normal(size=3000)})
    profile["features"]["s"]["dtype"] = "string"
    window = rng.normal(size=(1000, 4))
    window[::2, 0] = np.nan
    window[1, 0] = np.inf
    window[:, 3] = np.nan
    result = detect_drift(profile, ["a", "s", "unknown", "a2"], window)
    assert list(result.features) == ["a"]
    assert result.features["a"].rows == 499
    assert result.skipped == {
        "s": "a string feature: the window carries numbers only",
        "unknown": "not in the reference profile",
        "a2": "not in the reference profile",
    }
    profile["features"]["a2"] = profile["features"]["a"]
    result = detect_drift(profile, ["a", "a2"], window[:, [0, 3]])
    assert result.skipped == {"a2": "no finite value in the window"}


def test_score_drift_against_the_profiled_score(rng: np.random.Generator) -> None:
    schema = TableSchema(columns=[Column(name="x")])
    frame = pd.DataFrame({"x": rng.normal(size=5000)})
    profile = profile_frame(frame, schema, scores=rng.beta(1, 20, size=5000))
    window = rng.normal(size=(1000, 1))
    same = detect_drift(profile, ["x"], window, scores=rng.beta(1, 20, size=1000))
    assert same.score is not None
    assert not same.score.drifted
    moved = detect_drift(profile, ["x"], window, scores=rng.beta(3, 20, size=1000))
    assert moved.score is not None
    assert moved.score.drifted
    assert moved.score.method == "wasserstein"
    # The score does not count towards the dataset verdict.
    assert not moved.drifted
    with pytest.raises(InvalidInputError, match=r"scores must hold one value per window row"):
        detect_drift(profile, ["x"], window, scores=np.zeros(3))


def test_profile_without_sketches_falls_back_and_says_so(rng: np.random.Generator) -> None:
    reference = rng.normal(size=20_000)
    profile = _profile({"x": reference})
    for key in ("sketch", "unique", "categories"):
        del profile["features"]["x"][key]
    calm = detect_drift(profile, ["x"], rng.normal(size=(1000, 1))).features["x"]
    moved = detect_drift(profile, ["x"], rng.normal(0.5, 1.0, size=(1000, 1))).features["x"]
    assert calm.note is not None
    assert "no sketch" in calm.note
    assert not calm.drifted
    assert moved.drifted
    expected = stats.wasserstein_distance(reference, rng.normal(0.5, 1.0, size=1000))
    assert moved.statistic == pytest.approx(expected / reference.std(), abs=0.05)


def test_rules_override_method_and_threshold_per_feature(rng: np.random.Generator) -> None:
    names = ["a", "b"]
    profile = _profile({"a": rng.normal(size=5000), "b": rng.normal(size=5000)})
    config = DriftConfig(
        default=DriftRule(method="psi", threshold=0.5),
        features={"b": DriftRule(method="ks")},
        drift_share=1.0,
    )
    result = detect_drift(profile, names, rng.normal(0.4, 1.0, size=(1000, 2)), config)
    assert (result.features["a"].method, result.features["a"].threshold) == ("psi", 0.5)
    assert (result.features["b"].method, result.features["b"].threshold) == ("ks", 0.05)
    assert result.features["b"].drifted
    assert result.share == 0.5
    assert not result.drifted


def test_chisquare_on_a_continuous_feature_is_skipped_with_advice(
    rng: np.random.Generator,
) -> None:
    profile = _profile({"x": rng.normal(size=5000)})
    config = DriftConfig(default=DriftRule(method="chisquare"))
    result = detect_drift(profile, ["x"], rng.normal(size=(100, 1)), config)
    assert result.features == {}
    assert "chisquare needs the reference's value frequencies" in result.skipped["x"]


@pytest.mark.parametrize("rows", [1, 40, 5000])
def test_constant_reference_features(rows: int) -> None:
    profile = _profile({"x": np.full(rows, 2.0)})
    same = detect_drift(profile, ["x"], np.full((300, 1), 2.0)).features["x"]
    moved = detect_drift(profile, ["x"], np.full((300, 1), 3.0)).features["x"]
    assert not same.drifted
    assert moved.drifted


def test_window_shape_is_checked() -> None:
    profile = _profile({"x": np.arange(10.0)})
    with pytest.raises(InvalidInputError, match=r"window must be a matrix of rows × 1 features"):
        detect_drift(profile, ["x"], np.zeros((5, 2)))


# --- configuration ----------------------------------------------------------------------------


def test_config_round_trips_through_a_mapping() -> None:
    mapping = {
        "method": "psi",
        "threshold": 0.2,
        "drift_share": 0.3,
        "features": {"Amount": {"method": "ks", "threshold": 0.01}, "V1": {}},
    }
    config = DriftConfig.from_mapping(mapping)
    assert config.default == DriftRule("psi", 0.2)
    assert config.features["Amount"] == DriftRule("ks", 0.01)
    assert config.features["V1"] == DriftRule()
    assert DriftConfig.from_mapping(config.to_mapping()) == config
    assert DriftConfig.from_mapping(None) == DriftConfig()
    assert DriftConfig().to_mapping() == {"drift_share": 0.5}


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"methods": "ks"}, r"unknown key drift\.methods"),
        ({"method": "kolmogorov"}, r"unknown drift method 'kolmogorov'; use one of ks, "),
        ({"threshold": 0}, r"drift threshold must be a positive number, got 0"),
        ({"threshold": "high"}, r"drift threshold must be a positive number"),
        ({"method": "ks", "threshold": 1.5}, r"the ks threshold is a p-value and must be below 1"),
        ({"drift_share": 0}, r"drift\.drift_share: drift_share must be a fraction"),
        ({"drift_share": 2}, r"drift_share must be a fraction above 0 and at most 1"),
        ({"features": ["Amount"]}, r"drift\.features must map feature names to rules"),
        ({"features": {"Amount": "ks"}}, r"drift\.features\.Amount must be a mapping"),
        (
            {"features": {"Amount": {"method": "ks", "thresold": 0.1}}},
            r"unknown key drift\.features\.Amount\.thresold",
        ),
        (
            {"features": {"V1": {"method": "psi", "threshold": -1}}},
            r"drift\.features\.V1: drift threshold must be a positive number",
        ),
        ("ks", r"drift must be a mapping"),
    ],
)
def test_config_errors_name_the_bad_key(mapping: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        DriftConfig.from_mapping(mapping)

"""Drift from the profile alone against Evidently's DataDriftPreset on the raw data.

Prints: per-feature agreement of the drift verdicts over generated scenarios (small and large
reference) with the table of disagreements; the cost of one window of 1,000 rows × 30
features through ``detect_drift`` and through Evidently, in the same run; dataset-drift
verdicts over 50 undrifted windows; the features flagged in the first window of a 0.5-std
mean shift on 30 % of the features.

Needs the ``bench`` extra (``pip install -e '.[bench]'``). Evidently 0.7 imports a helper that
pandas 3 removed, from a data-integrity test that the drift preset never calls; it is stubbed
here before Evidently is imported.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shipyard.data import (
    FRAUD_SCHEMA,
    Column,
    TableSchema,
    drift_fraud,
    drifted_features,
    generate_fraud,
    profile_frame,
)
from shipyard.monitoring.drift import detect_drift

SMALL, LARGE, WINDOW = 800, 20_000, 1000
FEATURES = FRAUD_SCHEMA.feature_names

# Evidently's display names of its methods, and how each decides (legacy stattests).
EVIDENTLY_METHODS = {
    "K-S p_value": ("ks", lambda value, threshold: value <= threshold),
    "chi-square p_value": ("chisquare", lambda value, threshold: value < threshold),
    "Z-test p_value": ("z", lambda value, threshold: value < threshold),
    "Wasserstein distance (normed)": ("wasserstein", lambda value, threshold: value >= threshold),
    "Jensen-Shannon distance": ("jensenshannon", lambda value, threshold: value >= threshold),
    "PSI": ("psi", lambda value, threshold: value >= threshold),
}


def _evidently() -> tuple[Any, Any]:
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):
        common.infer_dtype_from_object = lambda dtype: np.dtype(dtype).type
    from evidently import Report
    from evidently.presets import DataDriftPreset

    return Report, DataDriftPreset


@dataclass
class Verdict:
    method: str
    value: float
    drifted: bool


def evidently_verdicts(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Verdict]:
    report, preset = _evidently()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report([preset()]).run(current, reference)
    verdicts = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method, decide = EVIDENTLY_METHODS[config["method"]]
        value = float(metric["value"])
        verdicts[config["column"]] = Verdict(method, value, decide(value, config["threshold"]))
    return verdicts


def shipyard_verdicts(profile: dict[str, Any], current: pd.DataFrame) -> dict[str, Verdict]:
    names = list(current.columns)
    result = detect_drift(profile, names, current.to_numpy(dtype=np.float64))
    return {
        name: Verdict(drift.method, drift.statistic, drift.drifted)
        for name, drift in result.features.items()
    }


# --- scenarios -------------------------------------------------------------------------------

CATEGORICAL_SCHEMA = TableSchema(
    columns=[
        *(Column(name=f"n{i}") for i in range(8)),
        *(Column(name=f"c{i}", dtype="int64") for i in range(6)),
        Column(name="b0", dtype="bool"),
        Column(name="b1", dtype="bool"),
        Column(name="f0"),
        Column(name="f1"),
    ]
)
CATEGORIES = [3, 4, 5, 6, 8, 10]


def categorical_table(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    """Numeric, integer-categorical, boolean and few-valued float columns; when ``drifted``,
    n0, c0, c1, b0 and f0 move."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(8):
        columns[f"n{i}"] = rng.normal(0.5 if drifted and i == 0 else 0.0, 1.0, rows)
    for i, k in enumerate(CATEGORIES):
        weights = np.linspace(2.0, 1.0, k)
        if drifted and i < 2:
            weights = weights[::-1]
        columns[f"c{i}"] = rng.choice(k, size=rows, p=weights / weights.sum()).astype("int64")
    columns["b0"] = rng.random(rows) < (0.45 if drifted else 0.3)
    columns["b1"] = rng.random(rows) < 0.3
    shares = [0.4, 0.3, 0.2, 0.1]
    values = [0.5, 1.5, 2.5, 3.5]
    columns["f0"] = rng.choice(values, size=rows, p=shares[::-1] if drifted else shares)
    columns["f1"] = rng.choice(values, size=rows, p=shares)
    return pd.DataFrame(columns)


def fraud_scenarios() -> dict[str, Callable[[pd.DataFrame], pd.DataFrame]]:
    return {
        "no shift": lambda frame: frame,
        "mean shift": lambda frame: drift_fraud(frame, "mean-shift"),
        "variance shift": lambda frame: drift_fraud(frame, "variance"),
        "one feature": lambda frame: drift_fraud(frame, "few", share=1 / 29),
        "many features": lambda frame: drift_fraud(frame, "many"),
    }


def agreement(seeds: int) -> None:
    rows: list[tuple[str, str, int, str, Verdict, Verdict]] = []
    for seed in range(seeds):
        for size_name, size in (("small", SMALL), ("large", LARGE)):
            reference = generate_fraud(size, seed=100 + seed)
            profile = profile_frame(reference, FRAUD_SCHEMA)
            base = generate_fraud(WINDOW, seed=200 + seed)
            for scenario, make in fraud_scenarios().items():
                current = make(base)[FEATURES]
                ours = shipyard_verdicts(profile, current)
                theirs = evidently_verdicts(reference[FEATURES], current)
                for name in FEATURES:
                    rows.append((scenario, size_name, seed, name, theirs[name], ours[name]))
            reference = categorical_table(size, 300 + seed, drifted=False)
            profile = profile_frame(reference, CATEGORICAL_SCHEMA)
            current = categorical_table(WINDOW, 400 + seed, drifted=True)
            ours = shipyard_verdicts(profile, current)
            theirs = evidently_verdicts(reference, current)
            for name in current.columns:
                rows.append(("categorical", size_name, seed, name, theirs[name], ours[name]))
    agree = sum(theirs.drifted == ours.drifted for *_, theirs, ours in rows)
    same_method = sum(theirs.method == ours.method for *_, theirs, ours in rows)
    print(f"\n## Agreement with Evidently's DataDriftPreset ({seeds} seed(s) per scenario)\n")
    print("| scenario | reference | pairs | agree | Evidently drifted | Shipyard drifted |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in [*fraud_scenarios(), "categorical"]:
        for size_name in ("small", "large"):
            group = [r for r in rows if r[0] == scenario and r[1] == size_name]
            print(
                f"| {scenario} | {size_name} | {len(group)} "
                f"| {sum(r[4].drifted == r[5].drifted for r in group)} "
                f"| {sum(r[4].drifted for r in group)} | {sum(r[5].drifted for r in group)} |"
            )
    print(
        f"\nverdicts agree on {agree}/{len(rows)} (feature, scenario) pairs = "
        f"{agree / len(rows):.1%} (target ≥ 95 %); same method on {same_method}/{len(rows)}"
    )
    largest = max(
        abs(theirs.value - ours.value) for *_, theirs, ours in rows if theirs.method == ours.method
    )
    print(f"largest |Evidently − Shipyard| statistic of the same method: {largest:.2e}")
    disagreements = [r for r in rows if r[4].drifted != r[5].drifted or r[4].method != r[5].method]
    print("\ndisagreements (verdict or method):\n")
    print("| scenario | reference | seed | feature | Evidently | Shipyard |")
    print("|---|---|---:|---|---|---|")
    for scenario, size_name, seed, name, theirs, ours in disagreements:
        print(
            f"| {scenario} | {size_name} | {seed} | {name} "
            f"| {theirs.method} {theirs.value:.4f} {'drift' if theirs.drifted else 'no drift'} "
            f"| {ours.method} {ours.value:.4f} {'drift' if ours.drifted else 'no drift'} |"
        )
    if not disagreements:
        print("| (none) | | | | | |")


def cost(repeats: int) -> None:
    print("\n## Cost of one window of 1,000 rows × 30 features\n")
    print("| reference | Shipyard detect_drift | Evidently DataDriftPreset | Evidently / ours |")
    print("|---|---:|---:|---:|")
    window = generate_fraud(WINDOW, seed=7)[FEATURES]
    matrix = window.to_numpy(dtype=np.float64)
    for size_name, size in (("large (20,000 rows)", LARGE), ("small (800 rows)", SMALL)):
        reference = generate_fraud(size, seed=8)
        profile = profile_frame(reference, FRAUD_SCHEMA)
        detect_drift(profile, FEATURES, matrix)
        ours = []
        for _ in range(repeats):
            start = time.perf_counter()
            detect_drift(profile, FEATURES, matrix)
            ours.append(time.perf_counter() - start)
        evidently_verdicts(reference[FEATURES], window)
        theirs = []
        for _ in range(3):
            start = time.perf_counter()
            evidently_verdicts(reference[FEATURES], window)
            theirs.append(time.perf_counter() - start)
        mine, other = statistics.median(ours), statistics.median(theirs)
        print(f"| {size_name} | {mine * 1e3:.2f} ms | {other * 1e3:.1f} ms | {other / mine:.0f}x |")
    print("\ntargets: ≤ 20 ms, ≥ 10x faster than Evidently (medians, same run)")


def alarms(windows: int) -> None:
    print("\n## False alarms and detection (reference: 60,000 generated rows)\n")
    profile = profile_frame(generate_fraud(60_000, seed=11), FRAUD_SCHEMA)
    verdicts, flagged = 0, 0
    for index in range(windows):
        window = generate_fraud(WINDOW, seed=1000 + index)[FEATURES].to_numpy(dtype=np.float64)
        result = detect_drift(profile, FEATURES, window)
        verdicts += result.drifted
        flagged += sum(drift.drifted for drift in result.features.values())
    print(
        f"undrifted windows: {verdicts}/{windows} dataset-drift verdicts (target 0); "
        f"{flagged}/{windows * len(FEATURES)} feature flags "
        f"({flagged / (windows * len(FEATURES)):.1%})"
    )
    shifted = drifted_features("mean-shift")
    window = drift_fraud(generate_fraud(WINDOW, seed=2000), "mean-shift")[FEATURES]
    result = detect_drift(profile, FEATURES, window.to_numpy(dtype=np.float64))
    hits = [name for name in shifted if result.features[name].drifted]
    others = [n for n, d in result.features.items() if d.drifted and n not in shifted]
    print(
        f"0.5-std mean shift on {len(shifted)} of 30 features, first window: "
        f"{len(hits)}/{len(shifted)} shifted features flagged, {len(others)} others flagged "
        f"{others}; dataset share {result.share:.2f} (verdict at ≥ 0.5: {result.drifted})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per agreement scenario")
    parser.add_argument("--repeats", type=int, default=50, help="timed detect_drift calls")
    parser.add_argument("--windows", type=int, default=50, help="undrifted windows")
    args = parser.parse_args()
    started = time.perf_counter()
    agreement(args.seeds)
    cost(args.repeats)
    alarms(args.windows)
    print(f"\nran in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

"""A version's monitoring over time: compact points of the monitor's snapshots.

A snapshot holds everything the monitor found in one cycle (about 12 kB for the fraud model);
a history point keeps the numbers a chart draws — per window the live metrics, label counts
and coverage, the dataset drift share and verdict, and each feature's drift statistic — at
about a fifth of that. ``HistorySchedule`` decides which cycles are kept: a tracker's first
(so a restarted or ``--once`` monitor leaves a point), then one every ``every_s`` seconds,
and any cycle whose verdicts changed (a drift or performance episode opened or closed), so
the moment a verdict flips is never thinned away. ``history_document`` reads them back for
``GET /v1/monitoring/models/{name}/versions/{version}/history``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.monitoring.drift import P_VALUE_METHODS
from shipyard.registry import HistoryPoint, ModelRef

if TYPE_CHECKING:
    from shipyard.registry import Registry

#: Most points one read returns (the latest of the range).
MAX_POINTS = 5000


def history_point(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of a snapshot (as ``ModelTracker`` saves it) that charts draw over time."""
    performance = snapshot.get("performance") or {}
    windows = snapshot.get("windows") or {}
    return {
        "rows_seen": snapshot.get("rows_seen"),
        "windows": {
            kind: {"rows": window.get("rows"), "labelled": window.get("labelled")}
            for kind, window in windows.items()
        },
        "performance": {
            kind: {
                "metrics": dict(value.get("metrics") or {}),
                "labelled": value.get("labelled"),
                "coverage": value.get("coverage"),
            }
            for kind, value in performance.items()
            if kind not in ("offline", "primary") and isinstance(value, Mapping)
        },
        "drift": {
            kind: _drift_point(value) for kind, value in (snapshot.get("drift") or {}).items()
        },
        "episodes": dict(snapshot.get("episodes") or {}),
    }


def _drift_point(window: Mapping[str, Any]) -> dict[str, Any]:
    result = window.get("result")
    if not result:
        return {"verdict": None, "share": None, "score": None, "features": {}, "drifted": []}
    features = result.get("features") or {}
    score = result.get("score")
    return {
        "verdict": window.get("verdict"),
        "share": result.get("share"),
        "score": score.get("statistic") if score else None,
        "features": {name: feature.get("statistic") for name, feature in features.items()},
        "drifted": sorted(name for name, feature in features.items() if feature.get("drifted")),
    }


def _verdicts(snapshot: Mapping[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, is kept whatever the time since the last point."""
    episodes = snapshot.get("episodes") or {}
    verdicts = snapshot.get("dataset_drift") or {}
    return (
        tuple(sorted(episodes.items())),
        tuple(sorted((kind, verdict) for kind, verdict in verdicts.items())),
    )


class HistorySchedule:
    """Which of a tracker's snapshots become history points (see the module's docstring)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._kept: dict[int, tuple[datetime, tuple[Any, ...]]] = {}

    def due(self, snapshots: Mapping[int, Mapping[str, Any]], now: datetime) -> list[HistoryPoint]:
        """The points to keep of this cycle's snapshots, by version."""
        points = []
        for version, snapshot in sorted(snapshots.items()):
            kept = self._kept.get(version)
            verdicts = _verdicts(snapshot)
            if (
                kept is None
                or now - kept[0] >= timedelta(seconds=self.every_s)
                or kept[1] != verdicts
            ):
                points.append(HistoryPoint(version, now, history_point(snapshot)))
        return points

    def kept(self, points: list[HistoryPoint], snapshots: Mapping[int, Mapping[str, Any]]) -> None:
        """Note that ``points`` were committed (only then: a refused cycle keeps nothing)."""
        for point in points:
            self._kept[point.version] = (point.at, _verdicts(snapshots[point.version]))


def history_document(
    registry: Registry,
    model: str,
    version: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """One version's history points in a time range, oldest first — at most ``limit``: when
    the range holds more (``matched``), every k-th from the newest on, so that they still
    span the range — with the version's offline metrics and the monitor's rules, which do
    not change over time. ``NotFoundError`` for an unknown model or version."""
    info = registry.get_version(ModelRef(model, version, None))
    store = registry.monitoring
    matched = store.history_count(model, version, since=since, until=until)
    points = store.history(model, version, since=since, until=until, limit=limit, spread=True)
    latest = store.snapshots(model).get(version) or {}
    document: dict[str, Any] = {
        "model": model,
        "version": version,
        "aliases": sorted(info.aliases),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "limit": limit,
        "matched": matched,
        "offline": dict(info.metrics),
        "primary": (latest.get("performance") or {}).get("primary"),
        "drift_rules": _drift_rules(latest),
        "points": [{**p.point, "at": p.at.isoformat()} for p in points],
    }
    if not points:
        document["hint"] = (
            f"no history of {model}:{version} in this range: `shipyard monitor` keeps a point "
            "every SHIPYARD_MONITOR_HISTORY_SECONDS while it watches the version"
        )
    return document


def _drift_rules(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Each feature's drift method and threshold, and the dataset's share, from a snapshot."""
    for window in (snapshot.get("drift") or {}).values():
        result = (window or {}).get("result")
        if result:
            features = dict(result.get("features") or {})
            if result.get("score"):
                features["score"] = result["score"]
            return {
                "drift_share": result.get("drift_share"),
                "features": {
                    name: {
                        "method": f.get("method"),
                        "threshold": f.get("threshold"),
                        # p-values drift below their threshold, distances at or above it
                        "drifts": "below" if f.get("method") in P_VALUE_METHODS else "above",
                    }
                    for name, f in features.items()
                },
            }
    return {"drift_share": None, "features": {}}

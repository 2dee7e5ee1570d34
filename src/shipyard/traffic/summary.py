"""What a traffic run measured, live and at the end: requests, latency, errors by kind,
versions seen, labels sent and their delays; ``summary`` is the JSON ``-o FILE`` writes."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Latencies the live percentiles are read from (the most recent ones).
RECENT = 2048
PERCENTILES = (50, 90, 99, 99.9)
DELAY_BUCKETS = 10


@dataclass
class TrafficStats:
    """Counts of one run; only the event loop that runs the users writes them."""

    requests: int = 0
    """Requests answered or failed."""
    succeeded: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Failed requests by kind (labels that could not be sent are in ``labels_failed``)."""
    versions: Counter[str] = field(default_factory=Counter)
    versions_first: dict[str, float] = field(default_factory=dict)
    """When each version first answered (clock time): when a swap reached the users."""
    latencies: array[float] = field(default_factory=lambda: array("d"))
    failovers: int = 0
    """Times a user moved on to the next address of the service (several --url)."""
    addresses: Counter[str] = field(default_factory=Counter)
    """Answered requests by the address that answered, when the target has several."""
    labels_chosen: int = 0
    """Answered predictions the users chose to label (with --label-probability)."""
    labels_sent: int = 0
    labels_wrong: int = 0
    """Labels sent wrong on purpose (--label-noise)."""
    labels_failed: int = 0
    labels_failed_by_reason: Counter[str] = field(default_factory=Counter)
    label_retries: int = 0
    """Batches sent again after a failure that may pass."""
    labels_unsent: int = 0
    """Labels not due yet when the run was stopped, and those still held when it was
    interrupted: chosen = sent + failed + unsent once the run ended."""
    label_delays: array[float] = field(default_factory=lambda: array("d"))
    started_at: float = 0.0
    started_at_unix: float | None = None
    """The start on the wall clock (seconds since the epoch), to line a run up with the
    events of other processes; None on a fake clock."""
    ended_at: float | None = None
    drift_started_at: float | None = None
    requests_before_drift: int = 0

    def answered(
        self,
        latency_s: float,
        version: str | None,
        at: float | None = None,
        address: str | None = None,
    ) -> None:
        """Count one answered request (answered at clock time ``at`` by ``address``, when
        known)."""
        self.requests += 1
        self.succeeded += 1
        self.latencies.append(latency_s)
        if address is not None:
            self.addresses[address] += 1
        if version is not None:
            if version not in self.versions and at is not None:
                self.versions_first[version] = at
            self.versions[version] += 1

    def failed(self, kind: str) -> None:
        """Count one failed request by the kind of failure."""
        self.requests += 1
        self.errors[kind] += 1

    def labels_done(self, labels: list[Any], failure: str | None) -> None:
        """Count a batch of ``Label`` sent (``failure`` None) or given up on."""
        if failure is not None:
            self.labels_failed += len(labels)
            self.labels_failed_by_reason[failure] += len(labels)
            return
        self.labels_sent += len(labels)
        self.labels_wrong += sum(1 for label in labels if label.wrong)
        self.label_delays.extend(label.delay_s for label in labels)

    def elapsed(self, now: float) -> float:
        """Seconds from the start to ``now`` (or to the end, once ended)."""
        end = self.ended_at if self.ended_at is not None else now
        return max(end - self.started_at, 0.0)

    def recent_percentiles_ms(self) -> tuple[float, float]:
        """p50 and p99 of the most recent latencies, in milliseconds (0 before any)."""
        recent = np.frombuffer(self.latencies, dtype=np.float64)[-RECENT:]
        if not len(recent):
            return 0.0, 0.0
        p50, p99 = np.percentile(recent, [50, 99]) * 1000
        return float(p50), float(p99)


def latency_summary(latencies: array[float]) -> dict[str, float | None]:
    """Percentiles, mean and maximum of every answered request, in milliseconds."""
    values = np.frombuffer(latencies, dtype=np.float64) * 1000
    keys = [f"p{q:g}".replace(".", "_") for q in PERCENTILES]
    if not len(values):
        return {**dict.fromkeys(keys), "mean": None, "max": None}
    found = np.percentile(values, PERCENTILES)
    result: dict[str, float | None] = {
        key: round(float(v), 3) for key, v in zip(keys, found, strict=True)
    }
    result["mean"] = round(float(values.mean()), 3)
    result["max"] = round(float(values.max()), 3)
    return result


def labels_by_delay(delays: array[float], low: float, high: float) -> list[dict[str, Any]]:
    """Labels sent per delay bucket: ten equal buckets from ``low`` to ``high`` seconds
    (one when they are equal)."""
    values = np.frombuffer(delays, dtype=np.float64)
    if high <= low:
        return [{"from_s": low, "to_s": high, "labels": len(values)}]
    edges = np.linspace(low, high, DELAY_BUCKETS + 1)
    counts, _ = np.histogram(values, bins=edges)
    return [
        {"from_s": round(float(a), 3), "to_s": round(float(b), 3), "labels": int(n)}
        for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def summary(stats: TrafficStats, config: dict[str, Any], now: float) -> dict[str, Any]:
    """The run as one JSON document."""
    seconds = stats.elapsed(now)
    low = float(config.get("label_delay_min_s", 0.0))
    high = float(config.get("label_delay_max_s", 0.0))
    drift = None
    if config.get("drift_at_s") is not None:
        started = stats.drift_started_at
        before = stats.requests if started is None else stats.requests_before_drift
        drift = {
            "scenario": config.get("drift"),
            "at_s": config.get("drift_at_s"),
            "started_after_s": None if started is None else round(started - stats.started_at, 3),
            "requests_before": before,
            "requests_after": stats.requests - before,
        }
    return {
        "requests": stats.requests,
        "succeeded": stats.succeeded,
        "errors": sum(stats.errors.values()),
        "errors_by_kind": dict(stats.errors.most_common()),
        "started_at_unix": stats.started_at_unix,
        "duration_s": round(seconds, 3),
        "requests_per_s": round(stats.requests / seconds, 1) if seconds else 0.0,
        "latency_ms": latency_summary(stats.latencies),
        "failovers": stats.failovers,
        "answered_by": dict(stats.addresses.most_common()),
        "versions": dict(sorted(stats.versions.items())),
        "versions_first_answered_after_s": {
            version: round(at - stats.started_at, 3)
            for version, at in sorted(stats.versions_first.items(), key=lambda item: item[1])
        },
        "labels_chosen": stats.labels_chosen,
        "labels_sent": stats.labels_sent,
        "labels_wrong": stats.labels_wrong,
        "labels_failed": stats.labels_failed,
        "labels_failed_by_reason": dict(stats.labels_failed_by_reason.most_common()),
        "label_retries": stats.label_retries,
        "labels_unsent": stats.labels_unsent,
        "label_rate": round(stats.labels_chosen / stats.succeeded, 4) if stats.succeeded else None,
        "labels_by_delay": labels_by_delay(stats.label_delays, low, high),
        "drift": drift,
        "config": config,
    }

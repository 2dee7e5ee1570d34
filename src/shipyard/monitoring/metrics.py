"""The monitor's Prometheus metrics, in a registry of its own (served on ``--metrics-port``).

=========================================================  =====================================
``shipyard_model_performance{model,version,metric,window}``  live metric; window ``all|rows|time``
``shipyard_model_offline_performance{model,version,metric}``  the version's offline evaluation
``shipyard_label_coverage{model,version,window}``            labelled / predicted
``shipyard_feature_drift{model,version,feature,window}``     the drift statistic (see ``method``
                                                             in the snapshot: p-value or distance)
``shipyard_feature_drifted{model,version,feature,window}``   1 when the feature drifted
``shipyard_dataset_drift{model,version,window}``             share of features that drifted
``shipyard_dataset_drifted{model,version,window}``           1 when share ≥ drift_share
``shipyard_feedback_total{model,result}``                    accepted, duplicate, joined, late,
                                                             unknown (the store's totals)
``shipyard_feedback_pending{model}``                         labels waiting for their prediction
``shipyard_monitor_events_total{model,kind}``                events this monitor raised
``shipyard_prediction_log_rows_total{model}``                log rows this monitor read
``shipyard_monitor_lease{model}``                            1 while this monitor owns the model
``shipyard_monitor_publish_failures_total{model}``           events not published to the broker
``shipyard_monitor_errors_total{model,error}``               cycles of a model that failed, by
                                                             exception class
``shipyard_monitor_cycle_seconds``                           one cycle over the owned models
=========================================================  =====================================

Drift gauges are per window (``rows``: the last N predictions, ``time``: the last T
minutes) and only for windows that give a verdict. A model's series go when the monitor
loses its lease, so two monitors never both report one model.

``observe_many`` records many observations of a histogram at once, for the server's and
the stream scorer's metrics too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PENDING = "pending"


class _FeedbackCounts(Collector):
    """``shipyard_feedback_total`` from the store's running totals (monotonic across
    monitor restarts, so exported as a counter) and ``shipyard_feedback_pending`` (what
    waits now: it goes down as labels are settled, so a gauge)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        totals = CounterMetricFamily(
            "shipyard_feedback",
            "Feedback labels per result: accepted, duplicate, joined, late, unknown",
            labels=["model", "result"],
        )
        pending = GaugeMetricFamily(
            "shipyard_feedback_pending",
            "Feedback labels stored and not joined yet (waiting for their prediction)",
            labels=["model"],
        )
        for model, counts in sorted(self.counts.items()):
            for result, value in sorted(counts.items()):
                if result == PENDING:
                    pending.add_metric([model], value)
                else:
                    totals.add_metric([model, result], value)
        yield totals
        yield pending


class MonitorMetrics:
    """Gauges and counters of one monitor process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.performance = Gauge(
            "shipyard_model_performance",
            "Live performance of a model version on labelled predictions",
            ["model", "version", "metric", "window"],
            registry=r,
        )
        self.offline = Gauge(
            "shipyard_model_offline_performance",
            "The version's offline evaluation, from the registry",
            ["model", "version", "metric"],
            registry=r,
        )
        self.coverage = Gauge(
            "shipyard_label_coverage",
            "Labelled predictions / predictions",
            ["model", "version", "window"],
            registry=r,
        )
        self.feature_drift = Gauge(
            "shipyard_feature_drift",
            "Drift statistic of a feature against the reference profile",
            ["model", "version", "feature", "window"],
            registry=r,
        )
        self.feature_drifted = Gauge(
            "shipyard_feature_drifted",
            "1 when the feature drifted",
            ["model", "version", "feature", "window"],
            registry=r,
        )
        self.dataset_drift = Gauge(
            "shipyard_dataset_drift",
            "Share of the features that drifted",
            ["model", "version", "window"],
            registry=r,
        )
        self.dataset_drifted = Gauge(
            "shipyard_dataset_drifted",
            "1 when the share of drifted features reached drift_share",
            ["model", "version", "window"],
            registry=r,
        )
        self.events = Counter(
            "shipyard_monitor_events",
            "Events raised by this monitor",
            ["model", "kind"],
            registry=r,
        )
        self.log_rows = Counter(
            "shipyard_prediction_log_rows",
            "Prediction log rows read by this monitor",
            ["model"],
            registry=r,
        )
        self.lease = Gauge(
            "shipyard_monitor_lease", "1 while this monitor owns the model", ["model"], registry=r
        )
        self.publish_failures = Counter(
            "shipyard_monitor_publish_failures",
            "Events that could not be published to the broker (the database has them)",
            ["model"],
            registry=r,
        )
        self.errors = Counter(
            "shipyard_monitor_errors",
            "Cycles of a model that failed, by exception class (the model is tried again later)",
            ["model", "error"],
            registry=r,
        )
        self.cycle = Histogram(
            "shipyard_monitor_cycle_seconds",
            "Duration of one monitor cycle over the owned models",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._feedback = _FeedbackCounts()
        r.register(self._feedback)
        self._series: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}

    def _set(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        gauge.labels(*labels).set(value)
        self._series.setdefault(labels[0], set()).add((gauge, labels))

    def feedback(self, model: str, counts: Mapping[str, int]) -> None:
        """The store's feedback totals of a model."""
        self._feedback.counts[model] = dict(counts)

    def snapshot(self, model: str, version: int, snapshot: Mapping[str, Any]) -> None:
        """Set a version's gauges from its snapshot."""
        v = str(version)
        performance = snapshot.get("performance", {})
        for window in ("all", "rows", "time"):
            part = performance.get(window) or {}
            for metric, value in (part.get("metrics") or {}).items():
                if value is not None:
                    self._set(self.performance, (model, v, metric, window), value)
            if part.get("coverage") is not None:
                self._set(self.coverage, (model, v, window), part["coverage"])
        for metric, value in (performance.get("offline") or {}).items():
            self._set(self.offline, (model, v, metric), value)
        for window, drift in (snapshot.get("drift") or {}).items():
            result = drift.get("result")
            if result is None or drift.get("verdict") is None:
                continue
            for name, feature in (result.get("features") or {}).items():
                if feature.get("statistic") is not None:
                    self._set(self.feature_drift, (model, v, name, window), feature["statistic"])
                drifted = 1.0 if feature.get("drifted") else 0.0
                self._set(self.feature_drifted, (model, v, name, window), drifted)
            if result.get("share") is not None:
                self._set(self.dataset_drift, (model, v, window), result["share"])
            self._set(self.dataset_drifted, (model, v, window), 1.0 if drift["verdict"] else 0.0)

    def forget(self, model: str) -> None:
        """Drop a model's series (the lease went to another monitor)."""
        for gauge, labels in self._series.pop(model, set()):
            gauge.remove(*labels)
        self._feedback.counts.pop(model, None)
        self.lease.labels(model).set(0)


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each value, in one pass per batch: each bucket and the
    sum are added to once, rather than once per value (a histogram child of
    prometheus-client 0.26: its ``_upper_bounds``, ``_buckets`` and ``_sum``, which
    ``observe`` itself updates; the version is pinned for it). Values are not NaN."""
    if not len(values):
        return
    array = np.asarray(values, dtype=np.float64)
    bounds = histogram._upper_bounds
    # observe() counts a value in the first bucket whose bound is >= it (the last is +Inf).
    counts = np.bincount(np.searchsorted(bounds, array, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(array.sum()))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)

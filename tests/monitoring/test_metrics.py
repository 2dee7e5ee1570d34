"""Prometheus helpers: many observations recorded at once count as one by one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from shipyard.monitoring.metrics import observe_many

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def test_observe_many_counts_as_observe_does_one_value_at_a_time() -> None:
    registry = CollectorRegistry()
    one = Histogram("one_by_one", "", ["worker"], buckets=LATENCY_BUCKETS, registry=registry)
    many = Histogram("at_once", "", ["worker"], buckets=LATENCY_BUCKETS, registry=registry)
    # On the bounds, between them, zero, past the last finite one (+Inf), and repeated.
    values = [0.0, 0.001, 0.0011, 0.0025, 0.003, 0.05, 0.05, 0.7, 30.0, 31.0, 1e6, 0.0004]
    for value in values:
        one.labels("0").observe(value)
    observe_many(many.labels("0"), values)
    observe_many(many.labels("0"), [])  # an empty batch changes nothing

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for family in registry.collect()
            if family.name == name
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples("at_once") == samples("one_by_one")
    assert ("_count", {"worker": "0"}, len(values)) in samples("at_once")

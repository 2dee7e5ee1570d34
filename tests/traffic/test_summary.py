"""The JSON summary of a run."""

from __future__ import annotations

from array import array

from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.labels import Label
from shipyard.traffic.summary import TrafficStats, labels_by_delay, summary


def test_the_summary_has_counts_percentiles_versions_labels_and_the_config() -> None:
    stats = TrafficStats(started_at=10.0)
    for i in range(100):
        stats.answered((i + 1) / 1000, "2" if i >= 90 else "1", at=10.0 + i / 100)
    stats.failed("HTTP 503")
    stats.failed("timeout")
    stats.failed("timeout")
    stats.labels_chosen = 40
    stats.labels_done([Label(f"p{i}", 1, delay_s=i / 10) for i in range(30)], None)
    stats.labels_done([Label("q", 0, delay_s=0.5, wrong=True)], None)
    stats.labels_done([Label("r", 0, delay_s=0.5)] * 4, "HTTP 500")
    stats.ended_at = 12.0
    config = TrafficConfig(label_delay_min_s=0.0, label_delay_max_s=3.0).as_dict()
    document = summary(stats, config, now=99.0)
    assert document["requests"] == 103
    assert document["succeeded"] == 100
    assert document["errors"] == 3  # failed requests only: the labels are apart
    assert document["errors_by_kind"] == {"timeout": 2, "HTTP 503": 1}
    assert document["requests"] - document["succeeded"] == document["errors"]
    assert document["duration_s"] == 2.0
    assert document["requests_per_s"] == 51.5
    assert document["latency_ms"]["p50"] == 50.5
    assert document["latency_ms"]["max"] == 100.0
    assert document["versions"] == {"1": 90, "2": 10}
    assert document["versions_first_answered_after_s"] == {"1": 0.0, "2": 0.9}
    assert document["labels_sent"] == 31
    assert document["labels_wrong"] == 1
    assert document["labels_failed"] == 4
    assert document["labels_failed_by_reason"] == {"HTTP 500": 4}
    assert document["label_rate"] == 0.4
    assert sum(b["labels"] for b in document["labels_by_delay"]) == 31
    assert document["config"]["label_delay_max_s"] == 3.0
    assert document["drift"] is None
    assert document["failovers"] == 0
    assert document["answered_by"] == {}  # one address: answers are not told apart


def test_answers_are_counted_by_address_and_failovers_summed() -> None:
    stats = TrafficStats(started_at=0.0)
    stats.answered(0.001, "1", address="http://a")
    stats.answered(0.001, "1", address="http://b")
    stats.answered(0.001, "1", address="http://b")
    stats.failovers = 4
    document = summary(stats, TrafficConfig().as_dict(), now=1.0)
    assert document["answered_by"] == {"http://b": 2, "http://a": 1}
    assert document["failovers"] == 4


def test_labels_by_delay_has_ten_buckets_or_one() -> None:
    delays = array("d", [0.0, 0.05, 0.95, 1.0])
    buckets = labels_by_delay(delays, 0.0, 1.0)
    assert len(buckets) == 10
    assert [b["labels"] for b in buckets] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert labels_by_delay(delays, 2.0, 2.0) == [{"from_s": 2.0, "to_s": 2.0, "labels": 4}]


def test_an_empty_run_has_no_percentiles() -> None:
    document = summary(TrafficStats(), TrafficConfig().as_dict(), now=0.0)
    assert document["latency_ms"]["p99"] is None
    assert document["label_rate"] is None

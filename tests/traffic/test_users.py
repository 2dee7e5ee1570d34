"""The user loop on a fake clock: label rate, think times, delays, noise, drift, seeds."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.labels import SEND_ATTEMPTS, Sent
from shipyard.traffic.users import Answer, LabelSource, Users, Visit

from .conftest import FakeClock, FakeSink, FakeTarget, run_virtual

ROWS = 500
TRUTH = [i % 2 for i in range(ROWS)]
DRIFTED_TRUTH = [1] * 50


def run(
    config: TrafficConfig,
    clock: FakeClock,
    target: FakeTarget | None = None,
    sink: FakeSink | None = None,
    drifted_rows: int | None = None,
) -> tuple[Users, list[tuple[int, Visit, Answer]]]:
    trace: list[tuple[int, Visit, Answer]] = []
    users = Users(
        config.check(),
        target or FakeTarget(),
        (ROWS, drifted_rows),
        LabelSource(TRUTH, DRIFTED_TRUTH if drifted_rows else None, classes=[0, 1]),
        sink if sink is not None else FakeSink(),
        clock=clock,
        trace=lambda slot, visit, answer: trace.append((slot, visit, answer)),
    )
    run_virtual(users.run())
    return users, trace


@pytest.mark.parametrize("probability", [0.05, 0.3, 0.8])
def test_over_5000_requests_the_label_rate_is_within_2_points_and_thinks_within_bounds(
    clock: FakeClock, probability: float
) -> None:
    config = TrafficConfig(
        users=10,
        requests=5000,
        label_probability=probability,
        label_delay_min_s=1.0,
        label_delay_max_s=5.0,
        think_min_s=0.5,
        think_max_s=2.0,
        label_interval_s=0.125,
        seed=7,
    )
    sink = FakeSink()
    users, trace = run(config, clock, sink=sink)
    stats = users.stats
    assert stats.requests == stats.succeeded == 5000
    assert len(trace) == 5000
    assert Counter(slot for slot, _, _ in trace) == dict.fromkeys(range(10), 500)
    rate = len(sink.labels) / stats.succeeded
    assert abs(rate - probability) <= 0.02, rate
    assert stats.labels_sent == stats.labels_chosen == len(sink.labels)
    assert stats.labels_unsent == stats.labels_failed == 0
    thinks = [visit.think_s for _, visit, _ in trace]
    assert all(0.5 <= t <= 2.0 for t in thinks)
    assert min(thinks) < 0.6
    assert max(thinks) > 1.9
    # The users slept exactly the think times drawn (the sender sleeps its interval).
    user_sleeps = [s for s in clock.slept if s != config.label_interval_s]
    assert sorted(user_sleeps) == sorted(thinks)
    delays = [label.delay_s for label in sink.labels]
    assert all(1.0 <= d <= 5.0 for d in delays)
    # Every label was sent for an id the target answered with, once.
    answered = {answer.id for _, _, answer in trace}
    assert {label.id for label in sink.labels} <= answered
    assert len({label.id for label in sink.labels}) == len(sink.labels)


def test_a_label_is_sent_after_its_delay_and_never_before(clock: FakeClock) -> None:
    sent_at: list[tuple[float, float]] = []

    class TimedSink(FakeSink):
        async def send(self, labels):  # type: ignore[no-untyped-def]
            sent_at.extend((clock.now(), label.delay_s) for label in labels)
            return await super().send(labels)

    answered_at: dict[str, float] = {}

    class TimedTarget(FakeTarget):
        async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
            answer = await super().predict(row, drifted, slot)
            answered_at[answer.id or ""] = clock.now()
            return answer

    sink = TimedSink()
    config = TrafficConfig(
        users=3, requests=300, label_probability=1.0, label_delay_min_s=2.0,
        label_delay_max_s=4.0, think_min_s=0.1, think_max_s=0.3, label_interval_s=0.05,
    )  # fmt: skip
    run(config, clock, target=TimedTarget(), sink=sink)
    assert len(sink.labels) == 300
    for (when, delay), label in zip(sent_at, sink.labels, strict=True):
        due = answered_at[label.id] + delay
        assert due <= when <= due + config.label_interval_s + 1e-9


def test_the_same_seed_gives_the_same_rows_labels_delays_and_thinks() -> None:
    config = TrafficConfig(
        users=4, requests=400, label_probability=0.5, label_delay_min_s=0.0,
        label_delay_max_s=3.0, label_noise=0.1, think_min_s=0.0, think_max_s=1.0, seed=42,
    )  # fmt: skip

    def visits(config: TrafficConfig) -> tuple[list[tuple[int, Visit]], list[tuple[object, float]]]:
        sink = FakeSink()
        _, trace = run(config, FakeClock(), sink=sink)
        per_user = sorted(((slot, visit) for slot, visit, _ in trace), key=lambda x: x[0])
        return per_user, sorted((label.label, label.delay_s) for label in sink.labels)

    first, again, other = visits(config), visits(config), visits(replace(config, seed=43))
    assert first == again
    assert first[0] != other[0]


def test_label_noise_sends_the_other_class(clock: FakeClock) -> None:
    sink = FakeSink()
    config = TrafficConfig(users=2, requests=2000, label_probability=1.0, label_noise=0.25)
    users, trace = run(config, clock, sink=sink)
    truth = {answer.id: TRUTH[visit.row] for _, visit, answer in trace}
    wrong = [label for label in sink.labels if label.label != truth[label.id]]
    assert all(label.wrong for label in wrong)
    assert len(wrong) == users.stats.labels_wrong
    assert abs(len(wrong) / 2000 - 0.25) <= 0.03


def test_users_switch_to_the_drifted_rows_at_drift_at(clock: FakeClock) -> None:
    target = FakeTarget()
    config = TrafficConfig(
        users=1, duration_s=40.0, drift_at_s=10.0, think_min_s=1.0, think_max_s=1.0,
        label_probability=1.0,
    )  # fmt: skip
    sink = FakeSink()
    users, _trace = run(config, clock, target=target, sink=sink, drifted_rows=50)
    drifted = [d for _, d, _ in target.requests]
    assert drifted == [False] * 10 + [True] * 30
    assert all(row < 50 for row, d, _ in target.requests if d)
    assert {label.label for label in sink.labels[10:]} == {1}  # the drifted rows' truth
    assert users.stats.requests_before_drift == 10
    assert users.stats.drift_started_at == pytest.approx(users.stats.started_at + 10.0)


def test_duration_bounds_the_run_on_the_clock(clock: FakeClock) -> None:
    config = TrafficConfig(users=5, duration_s=30.0, think_min_s=1.0, think_max_s=1.0)
    users, _ = run(config, clock)
    assert users.stats.requests == 5 * 30


def test_requests_bound_the_run(clock: FakeClock) -> None:
    users, trace = run(TrafficConfig(users=3, requests=10), clock)
    assert users.stats.requests == 10
    assert Counter(slot for slot, _, _ in trace) == {0: 4, 1: 3, 2: 3}


def test_an_open_loop_arrives_at_the_rate_whatever_the_answers(clock: FakeClock) -> None:
    config = TrafficConfig(users=8, rate=200.0, duration_s=25.0, label_probability=0.5)
    users, trace = run(config, clock)
    assert abs(users.stats.requests - 5000) <= 250  # Poisson: sd ≈ 71
    assert {slot for slot, _, _ in trace} <= set(range(8))
    assert abs(users.stats.labels_chosen / users.stats.requests - 0.5) <= 0.02


def test_failures_are_counted_by_kind_and_never_labelled(clock: FakeClock) -> None:
    target = FakeTarget(fail_at={0, 5, 9})
    sink = FakeSink()
    users, _ = run(TrafficConfig(users=1, requests=10, label_probability=1.0), clock, target, sink)
    assert users.stats.errors == {"HTTP 503": 3}
    assert users.stats.succeeded == 7
    assert len(sink.labels) == 7


def test_a_batch_that_may_pass_is_sent_again_then_counted_failed(clock: FakeClock) -> None:
    retry = Sent(failure="HTTP 503", retryable=True)
    sink = FakeSink(outcomes=[retry] * (SEND_ATTEMPTS + 1))
    config = TrafficConfig(users=1, requests=1, label_probability=1.0)
    users, _ = run(config, clock, sink=sink)
    assert len(sink.batches) == SEND_ATTEMPTS
    assert users.stats.labels_failed == 1
    assert users.stats.errors == {"labels: HTTP 503": 1}

    sink = FakeSink(outcomes=[retry])
    users, _ = run(config, FakeClock(), sink=sink)
    assert len(sink.batches) == 2
    assert users.stats.labels_sent == 1


def test_refused_credentials_stop_the_run(clock: FakeClock) -> None:
    refused = Sent(failure="HTTP 401", fatal="the server refused the API key")
    sink = FakeSink(outcomes=[refused])
    config = TrafficConfig(
        users=2, requests=10_000, label_probability=1.0, think_min_s=0.1, think_max_s=0.1
    )
    users, _ = run(config, clock, sink=sink)
    assert users.fatal == "the server refused the API key"
    assert users.stats.requests < 100
    assert len(sink.batches) == 1
    assert users.stats.labels_sent == 0
    assert users.stats.labels_failed + users.stats.labels_unsent == users.stats.labels_chosen


def test_a_stop_sends_what_is_due_and_counts_the_rest_unsent(clock: FakeClock) -> None:
    sink = FakeSink()
    config = TrafficConfig(
        users=1, duration_s=100.0, label_probability=1.0, label_delay_min_s=50.0,
        label_delay_max_s=50.0, think_min_s=1.0, think_max_s=1.0,
    )  # fmt: skip
    users = Users(config, FakeTarget(), (ROWS, None), LabelSource(TRUTH, None), sink, clock=clock)

    async def main() -> None:
        task = asyncio.create_task(users.run())
        await asyncio.sleep(60.5)
        users.stop()
        await task

    run_virtual(main())
    assert users.stats.labels_sent == len(sink.labels) >= 9
    assert users.stats.labels_unsent > 0
    assert users.stats.labels_sent + users.stats.labels_unsent == users.stats.labels_chosen

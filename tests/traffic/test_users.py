"""The user loop on a fake clock: label rate, think times, delays, noise, drift, seeds,
retries; and labels sent over HTTP to a real server that may be down for a while."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import replace

import httpx
import pytest

from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.labels import Sent
from shipyard.traffic.targets import HttpFeedback
from shipyard.traffic.users import Answer, LabelSource, Users, Visit

from .conftest import FakeClock, FakeSink, FakeTarget, FeedbackServer, run_virtual

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
    # The users slept exactly the think times drawn (the sender's sleeps are kept apart).
    assert sorted(clock.slept) == sorted(thinks)
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
        label_probability=1.0, label_interval_s=0.125,
    )  # fmt: skip
    # (Ticks of 0.125 s add up exactly: the user's visit at 10 s is not moved a rounding
    # error early by a sender tick that lands a nanosecond before it.)
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


def test_a_batch_that_may_pass_is_sent_again_after_a_doubling_pause_until_it_goes(
    clock: FakeClock,
) -> None:
    retry = Sent(failure="HTTP 503", retryable=True)
    sink = FakeSink(outcomes=[retry] * 7)
    config = TrafficConfig(users=1, requests=1, label_probability=1.0)
    users, _ = run(config, clock, sink=sink)
    assert len(sink.batches) == 8
    assert users.stats.labels_sent == 1
    assert users.stats.labels_failed == 0
    assert users.stats.label_retries == 7
    assert users.stats.errors == {}
    # Capped at 2 s: a server back after an outage hears from the users within 2 s.
    backoffs = [s for s in clock.sender_slept if s >= 0.1]
    assert backoffs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_labels_that_came_due_during_an_outage_go_out_with_the_retried_batch(
    clock: FakeClock,
) -> None:
    retry = Sent(failure="connection: ConnectError", retryable=True)
    sink = FakeSink(outcomes=[retry] * 5)
    config = TrafficConfig(
        users=1, duration_s=4.0, label_probability=1.0, think_min_s=0.5, think_max_s=0.5
    )
    users, _ = run(config, clock, sink=sink)
    assert users.stats.labels_sent == users.stats.labels_chosen == 8
    assert len(sink.batches[5]) > 1  # the retry took the labels due by then
    assert len({label.id for label in sink.labels[-8:]}) == 8


def test_a_sink_still_down_after_the_grace_counts_its_labels_failed_with_the_reason(
    clock: FakeClock,
) -> None:
    retry = Sent(failure="HTTP 503", retryable=True)
    sink = FakeSink(outcomes=[retry] * 10_000)
    config = TrafficConfig(
        users=2, duration_s=20.0, label_probability=0.5, label_delay_max_s=1.0,
        think_min_s=0.5, think_max_s=0.5,
    )  # fmt: skip
    users = Users(
        config, FakeTarget(), (ROWS, None), LabelSource(TRUTH, None), sink, clock=clock,
        label_grace_s=5.0,
    )  # fmt: skip

    async def main() -> float:
        await users.run()
        return clock.now()

    gave_up = run_virtual(main())
    stats = users.stats
    assert stats.labels_chosen > 0
    assert stats.labels_failed == stats.labels_chosen
    assert stats.labels_failed_by_reason == {"HTTP 503": stats.labels_chosen}
    assert stats.labels_sent == stats.labels_unsent == 0
    # Tried all along the run and 5 s after the last label was due (answered in the last
    # think time of 0.5 s, due at most 1 s later), at most every 2 s after the first
    # pauses; the last pause ends with the grace.
    assert stats.ended_at is not None
    assert stats.ended_at - 0.5 + 5.0 <= gave_up <= stats.ended_at + 1.0 + 5.0 + 1e-6
    assert 12 <= len(sink.batches) <= 25


def stopped_during_an_outage(
    clock: FakeClock, *, cancel_after_s: float | None = None
) -> tuple[Users, FakeSink, float, float]:
    """Users whose sink is always down, stopped at 30 s of a 100-s run whose labels wait up
    to an hour (and, with ``cancel_after_s``, interrupted that long after the stop); the
    users, the sink, and the clock at the stop and when ``run`` returned."""
    retry = Sent(failure="connection: ConnectError", retryable=True)
    sink = FakeSink(outcomes=[retry] * 100_000)
    config = TrafficConfig(
        users=2, duration_s=100.0, label_probability=1.0, label_delay_min_s=0.0,
        label_delay_max_s=3600.0, think_min_s=0.5, think_max_s=0.5,
    )  # fmt: skip
    users = Users(
        config, FakeTarget(), (ROWS, None), LabelSource(TRUTH, None), sink, clock=clock,
        label_grace_s=5.0,
    )  # fmt: skip

    async def main() -> tuple[float, float]:
        task = asyncio.create_task(users.run())
        await asyncio.sleep(30.0)
        stopped = clock.now()
        users.stop()
        if cancel_after_s is not None:
            await asyncio.sleep(cancel_after_s)
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return stopped, clock.now()

    stopped, returned = run_virtual(main())
    return users, sink, stopped, returned


def test_a_stop_during_an_outage_ends_within_the_grace_and_drops_the_labels_not_due(
    clock: FakeClock,
) -> None:
    users, sink, stopped, returned = stopped_during_an_outage(clock)
    stats = users.stats
    assert stopped < returned <= stopped + 5.0 + 1e-6  # not the hour of the longest delay
    # Labels due by the stop were tried all along and failed; the others were never tried.
    assert stats.labels_failed > 0
    assert stats.labels_failed_by_reason == {"connection: ConnectError": stats.labels_failed}
    assert stats.labels_unsent > 10 * stats.labels_failed  # delays of up to an hour
    assert stats.labels_sent == 0
    assert stats.labels_chosen == stats.labels_failed + stats.labels_unsent
    assert len({label.id for label in sink.labels}) == stats.labels_failed


def test_an_interrupt_after_the_stop_counts_the_labels_it_held_unsent(clock: FakeClock) -> None:
    users, sink, stopped, returned = stopped_during_an_outage(clock, cancel_after_s=2.0)
    stats = users.stats
    assert returned == pytest.approx(stopped + 2.0)
    assert stats.labels_failed == stats.labels_sent == 0
    assert stats.labels_unsent == stats.labels_chosen > 0
    assert sink.batches  # the due labels were being retried when interrupted


ENDINGS = ["the bound", "a stop", "a stop during an outage", "an interrupt"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_chosen_label_is_sent_failed_or_unsent_whatever_the_ending(
    clock: FakeClock, ending: str
) -> None:
    """labels_chosen == labels_sent + labels_failed + labels_unsent, however the run ends."""
    down = ending in ("a stop during an outage", "an interrupt")
    retry = Sent(failure="HTTP 503", retryable=True)
    # Down for the first 10 attempts (the bound: they go out later) or for good.
    sink = FakeSink(outcomes=[retry] * (100_000 if down else 10))
    config = TrafficConfig(
        users=3, duration_s=40.0, label_probability=0.7, label_delay_min_s=1.0,
        label_delay_max_s=30.0, think_min_s=0.2, think_max_s=0.8,
    )  # fmt: skip
    users = Users(
        config, FakeTarget(), (ROWS, None), LabelSource(TRUTH, None), sink, clock=clock,
        label_grace_s=5.0,
    )  # fmt: skip

    async def main() -> None:
        task = asyncio.create_task(users.run())
        if ending != "the bound":
            await asyncio.sleep(20.0)
            users.stop()
            if ending == "an interrupt":
                await asyncio.sleep(1.0)
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_virtual(main())
    stats = users.stats
    assert stats.labels_chosen > 50
    assert stats.labels_chosen == stats.labels_sent + stats.labels_failed + stats.labels_unsent
    assert stats.errors == {}  # label failures are not request errors
    if ending == "the bound":
        assert stats.labels_sent == stats.labels_chosen
    elif ending == "a stop":
        assert stats.labels_sent > 0
        assert stats.labels_unsent > 0
    elif ending == "a stop during an outage":
        assert stats.labels_failed > 0
        assert stats.labels_unsent > 0
    else:
        assert stats.labels_unsent == stats.labels_chosen


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


class TimedTarget(FakeTarget):
    """Answers at once, keeping when (``time.perf_counter``) each id was answered."""

    def __init__(self) -> None:
        super().__init__()
        self.answered_at: dict[str, float] = {}

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        answer = await super().predict(row, drifted, slot)
        self.answered_at[answer.id or ""] = time.perf_counter()
        return answer


def run_real(config: TrafficConfig, server: FeedbackServer) -> tuple[Users, TimedTarget]:
    """Users on the real clock whose labels go to ``server`` over HTTP."""
    target = TimedTarget()

    async def main() -> Users:
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
            users = Users(
                config.check(), target, (ROWS, None), LabelSource(TRUTH, None),
                HttpFeedback(client, "fraud"), label_grace_s=5.0,
            )  # fmt: skip
            await users.run()
        return users

    return asyncio.run(main()), target


def test_labels_reach_a_real_server_all_of_them_and_none_before_its_delay(
    feedback_server: FeedbackServer,
) -> None:
    # How late past the maximum a label may be is a matter of the machine's speed: the fake
    # clock checks the scheduler's slack (one interval); here, only what speed cannot change.
    config = TrafficConfig(
        users=4, duration_s=2.0, label_probability=1.0, label_delay_min_s=0.2,
        label_delay_max_s=0.6, think_min_s=0.02, think_max_s=0.05,
    )  # fmt: skip
    users, target = run_real(config, feedback_server)
    received = feedback_server.received
    assert users.stats.labels_sent == users.stats.labels_chosen == len(received) > 10
    assert set(received) == set(target.answered_at)
    early = [i for i, at in received.items() if at - target.answered_at[i] < 0.2]
    assert early == []


def test_labels_wait_out_a_real_server_that_is_down_for_a_while(
    feedback_server: FeedbackServer,
) -> None:
    feedback_server.down_until = time.perf_counter() + 1.5
    config = TrafficConfig(
        users=2, duration_s=2.0, label_probability=1.0, label_delay_max_s=0.1,
        think_min_s=0.05, think_max_s=0.1,
    )  # fmt: skip
    users, target = run_real(config, feedback_server)
    stats = users.stats
    assert feedback_server.refused >= 2
    assert stats.label_retries == feedback_server.refused
    assert stats.labels_failed == 0
    assert stats.labels_sent == stats.labels_chosen == len(target.answered_at)
    assert set(feedback_server.received) == set(target.answered_at)


def test_a_stop_while_a_real_server_is_down_counts_the_due_labels_failed_and_the_rest_unsent(
    feedback_server: FeedbackServer,
) -> None:
    feedback_server.down_until = float("inf")
    config = TrafficConfig(
        users=2, duration_s=60.0, label_probability=1.0, label_delay_max_s=1.0,
        think_min_s=0.02, think_max_s=0.05,
    )  # fmt: skip
    target = TimedTarget()

    async def main() -> Users:
        async with httpx.AsyncClient(base_url=feedback_server.url, timeout=5.0) as client:
            users = Users(
                config.check(), target, (ROWS, None), LabelSource(TRUTH, None),
                HttpFeedback(client, "fraud"), label_grace_s=0.5,
            )  # fmt: skip
            task = asyncio.create_task(users.run())
            while users.stats.labels_chosen < 20:  # bounded: the users label every answer
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # some labels come due and are refused
            users.stop()
            await task
        return users

    stats = asyncio.run(asyncio.wait_for(main(), timeout=60)).stats
    assert feedback_server.refused >= 1
    assert 0 < stats.label_retries < feedback_server.refused  # the last try gave up
    assert stats.labels_sent == 0
    assert stats.labels_failed > 0
    assert stats.labels_failed_by_reason.keys() == {"HTTP 503"}
    assert stats.labels_unsent > 0
    assert stats.labels_chosen == stats.labels_failed + stats.labels_unsent
    assert stats.errors == {}

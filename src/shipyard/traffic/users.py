"""Simulated users: the loop each one runs, and the open-loop arrivals of ``--rate``.

A closed-loop user picks a row, asks the target for its prediction, with probability P
drops the row's true label (wrong with probability ``label_noise``) into the pending labels
to be sent after a delay, then thinks. Every random draw comes from the user's own
generator, made from the run's seed and the user's number, and a visit always takes the
same six draws whatever the answer — so a seed gives the same rows, labels, delays and think
times. The clock and the target are handed in: the tests run thousands of visits on a fake
clock in a fraction of a second, and the CLI runs them against a server or a broker.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.labels import LABEL_GRACE_S, Backoff, Label, LabelSink, PendingLabels
from shipyard.traffic.summary import TrafficStats

#: Most labels sent in one batch (the server's default SHIPYARD_MAX_FEEDBACK_ITEMS).
LABEL_BATCH = 10_000
#: The name of the task that sends the labels (the tests tell its sleeps from the users').
SENDER_TASK = "traffic-labels"


class Clock(Protocol):
    """Time for the users: ``now`` in seconds, and a way to wait."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class MonotonicClock:
    """The real clock: ``time.perf_counter`` (uvloop's ``loop.time()`` counts whole
    milliseconds, too coarse for latencies) and ``asyncio.sleep``."""

    def now(self) -> float:
        """Seconds on ``time.perf_counter``."""
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Answer:
    """What a target made of one request: the prediction's id and version, or a failure."""

    id: str | None = None
    version: str | None = None
    failure: str | None = None
    """The kind of failure (``HTTP 503``, ``timeout``, ``refused``…); None when answered."""
    failovers: int = 0
    """How many times the request moved on to another address of the service."""
    address: str | None = None
    """The address that answered (or was tried last), when the target has several."""


class Target(Protocol):
    """Where predictions come from: a server route or a broker queue."""

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        """The prediction for row ``row`` of the normal or the drifted rows, sent on the
        connection of ``slot`` (a user's number, below the number of users)."""
        ...


class Visit(NamedTuple):
    """The draws of one visit: which row, whether and how it is labelled, the think time."""

    row: int
    labelled: bool
    delay_s: float
    noisy: bool
    wrong_class: int
    think_s: float


@dataclass(frozen=True)
class LabelSource:
    """The true label of each row, and the classes a wrong label is picked from."""

    normal: Sequence[Any] | None
    drifted: Sequence[Any] | None
    classes: Sequence[Any] = ()


class Draws:
    """A generator's uniform draws, six per visit, made in blocks (one numpy call per
    ``BLOCK`` visits instead of six per visit: most of a visit's cost otherwise)."""

    BLOCK = 512

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._block: list[tuple[float, ...]] = []
        self._next = 0
        self._gaps: list[float] = []

    def next(self) -> tuple[float, ...]:
        """The next visit's six numbers in [0, 1)."""
        if self._next == len(self._block):
            self._block = [tuple(c) for c in self.rng.random((self.BLOCK, 6)).tolist()]
            self._next = 0
        self._next += 1
        return self._block[self._next - 1]

    def gap(self, rate: float) -> float:
        """The time to the next arrival of a Poisson process of ``rate`` per second."""
        if not self._gaps:
            self._gaps = self.rng.exponential(1.0 / rate, self.BLOCK).tolist()[::-1]
        return self._gaps.pop()


class Users:
    """One run of simulated users against a target; ``run`` returns the stats."""

    def __init__(
        self,
        config: TrafficConfig,
        target: Target,
        rows: tuple[int, int | None],
        labels: LabelSource,
        sink: LabelSink | None,
        *,
        clock: Clock | None = None,
        trace: Callable[[int, Visit, Answer], None] | None = None,
        label_grace_s: float = LABEL_GRACE_S,
    ) -> None:
        self.config = config
        self.target = target
        self.rows = rows
        """How many normal and drifted rows there are (None: no drifted rows)."""
        self.labels = labels
        self.sink = sink
        self.clock = clock or MonotonicClock()
        self.trace = trace
        self.label_grace_s = label_grace_s
        """How long a failing sink is still tried once the visits are over: after the last
        label was due, or after the stop."""
        self.stats = TrafficStats()
        self.pending = PendingLabels()
        self.fatal: str | None = None
        """Why the run stopped early (the feedback credentials were refused)."""
        self._stop = asyncio.Event()
        self._stopped_at: float | None = None
        self._deadline = float("inf")
        self._visits_done = False

    def stop(self) -> None:
        """End the run: users finish their request and stop; the labels already due are
        still sent (for ``label_grace_s`` at most), the others count as unsent."""
        if self._stopped_at is None:
            self._stopped_at = self.clock.now()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called (or refused credentials stopped the run)."""
        return self._stop.is_set()

    @property
    def drifting(self) -> bool:
        """Whether the users have switched to the drifted rows."""
        return self.stats.drift_started_at is not None

    async def run(self) -> TrafficStats:
        """Run the users (or arrivals) until a bound, then send the labels still due."""
        config = self.config
        now = self.clock.now()
        self.stats.started_at = now
        if type(self.clock) is MonotonicClock:  # a fake clock has no wall-clock start
            self.stats.started_at_unix = round(time.time(), 3)
        duration = config.bounded_duration_s
        if duration is not None:
            self._deadline = now + duration
        seeds = np.random.SeedSequence(config.seed).spawn(config.users + 1)
        sender = asyncio.create_task(self._send_labels(), name=SENDER_TASK)
        try:
            if config.rate is None:
                await asyncio.gather(
                    *(self._user(i, np.random.default_rng(seeds[i])) for i in range(config.users))
                )
            else:
                await self._arrivals(np.random.default_rng(seeds[-1]))
        except asyncio.CancelledError:
            # Interrupted (a second Ctrl-C): the labels still held count as unsent.
            sender.cancel()
            raise
        finally:
            self.stats.ended_at = self.clock.now()
            self._visits_done = True
            # Cancelling this await (an interrupt during the grace) cancels the sender too.
            await sender
        return self.stats

    def _over(self) -> bool:
        return self._stop.is_set() or self.clock.now() >= self._deadline

    def _budget(self, user: int) -> int | None:
        """This user's share of --requests (the first users take one more of a remainder)."""
        total = self.config.requests
        if total is None:
            return None
        users = self.config.users if self.config.rate is None else 1
        return total // users + (1 if user < total % users else 0)

    def _drifted(self) -> bool:
        """Whether this visit takes drifted rows, switching (once) when drift starts."""
        at = self.config.drift_at_s
        if at is None or self.rows[1] is None:
            return False
        if self.stats.drift_started_at is None:
            now = self.clock.now()
            if now - self.stats.started_at < at:
                return False
            self.stats.drift_started_at = now
            self.stats.requests_before_drift = self.stats.requests
        return True

    def _draw(self, draws: Draws, drifted: bool) -> Visit:
        """A visit from the next six uniform draws, always used in the same order."""
        config = self.config
        count = self.rows[1] if drifted and self.rows[1] is not None else self.rows[0]
        row, labelled, delay, noisy, wrong, think = draws.next()
        low, high = config.label_delay_min_s, config.label_delay_max_s
        think_low, think_high = config.think_min_s, config.think_max_s
        return Visit(
            row=min(int(row * count), count - 1),
            labelled=labelled < config.label_probability,
            delay_s=low + delay * (high - low),
            noisy=noisy < config.label_noise,
            wrong_class=int(wrong * max(len(self.labels.classes) - 1, 1)),
            think_s=think_low + think * (think_high - think_low),
        )

    async def _user(self, user: int, rng: np.random.Generator) -> None:
        draws = Draws(rng)
        budget = self._budget(user)
        done = 0
        while (budget is None or done < budget) and not self._over():
            drifted = self._drifted()
            visit = self._draw(draws, drifted)
            await self._visit(user, visit, drifted, self.clock.now())
            done += 1
            think = min(visit.think_s, self._deadline - self.clock.now())
            if think > 0 and not self._over():
                await self.clock.sleep(think)

    async def _arrivals(self, rng: np.random.Generator) -> None:
        """Visits at exponential gaps of mean 1/rate, whatever the answers; at most
        ``users`` in flight. Latency runs from the scheduled arrival, so a target that
        falls behind shows as latency, not as a lower rate."""
        assert self.config.rate is not None
        draws = Draws(rng)
        free: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(self.config.users):
            free.put_nowait(slot)
        budget = self._budget(0)
        running: set[asyncio.Task[None]] = set()
        arrival = self.clock.now()
        done = 0
        while (budget is None or done < budget) and not self._over():
            arrival += draws.gap(self.config.rate)
            wait = arrival - self.clock.now()
            if wait > 0:
                await self.clock.sleep(min(wait, max(self._deadline - self.clock.now(), 0.0)))
            if self._over():
                break
            drifted = self._drifted()
            visit = self._draw(draws, drifted)
            slot = await free.get()
            task = asyncio.create_task(self._visit(slot, visit, drifted, arrival))
            task.add_done_callback(functools.partial(_release, free, slot))
            running.add(task)
            task.add_done_callback(running.discard)
            done += 1
        if running:
            await asyncio.gather(*running)

    async def _visit(self, slot: int, visit: Visit, drifted: bool, started: float) -> None:
        answer = await self.target.predict(visit.row, drifted, slot)
        finished = self.clock.now()
        if self.trace is not None:
            self.trace(slot, visit, answer)
        self.stats.failovers += answer.failovers
        if answer.failure is not None:
            self.stats.failed(answer.failure)
            return
        self.stats.answered(finished - started, answer.version, finished, answer.address)
        if visit.labelled and answer.id is not None:
            label = self._label(visit, drifted, answer.id)
            if label is not None:
                self.stats.labels_chosen += 1
                self.pending.add(finished + visit.delay_s, label)

    def _label(self, visit: Visit, drifted: bool, prediction_id: str) -> Label | None:
        truth = self.labels.drifted if drifted else self.labels.normal
        if truth is None:
            return None
        label = truth[visit.row]
        classes = self.labels.classes
        if visit.noisy and len(classes) > 1:
            others = [c for c in classes if c != label]
            wrong = others[visit.wrong_class % len(others)]
            return Label(prediction_id, wrong, visit.delay_s, wrong=True)
        return Label(prediction_id, label, visit.delay_s)

    async def _send_labels(self) -> None:
        """Every ``label_interval_s``, send the labels that are due in one batch; after the
        visits, until none waits. A stop drops the labels not due yet (counted unsent), even
        while a failing batch is being retried, so a stop ends within the grace.

        A batch that failed for a reason that may pass goes back to wait and is tried again
        (with the labels that came due meanwhile) after a pause of 0.1 s doubling to 2 s,
        for as long as the visits last and then ``label_grace_s`` after the last label was
        due or after the stop; then what could not be sent counts as failed, with the last
        failure's kind. Cancelled, it counts the labels it still held as unsent."""
        held: list[tuple[float, Label]] = []
        try:
            await self._send_loop(held)
        except asyncio.CancelledError:
            self.stats.labels_unsent += len(held) + self.pending.drop_all()
            raise

    async def _send_loop(self, held: list[tuple[float, Label]]) -> None:
        """The sender's ticks; ``held`` is the batch being sent (for a cancellation)."""
        interval = self.config.label_interval_s
        backoff = Backoff()
        start, ticks = self.clock.now(), 0
        while True:
            now = self.clock.now()
            if self._stop.is_set():
                self.stats.labels_unsent += self.pending.drop_after(now)
            batch = self.pending.take_due(now, LABEL_BATCH)
            if batch:
                labels = [label for _, label in batch]
                if self.sink is None or self.fatal is not None:
                    self.stats.labels_unsent += len(batch)
                    continue
                held[:] = batch
                sent = await self.sink.send(labels)
                held.clear()
                give_up_at = self._give_up_at(batch)
                if sent.failure is None:
                    backoff.reset()
                    self.stats.labels_done(labels, None)
                elif sent.retryable and not sent.fatal and self.clock.now() < give_up_at:
                    self.stats.label_retries += 1
                    for due, label in batch:
                        self.pending.add(due, label)
                    # The last pause ends at the grace's end: one more try, then give up.
                    pause = min(backoff.pause(), give_up_at - self.clock.now())
                    await self.clock.sleep(pause)
                    start, ticks = self.clock.now(), 0
                else:
                    self.stats.labels_done(labels, sent.failure)
                    if sent.fatal is not None:
                        self.fatal = sent.fatal
                        self.stop()
                continue
            if self._visits_done and (not self.pending or self._stop.is_set()):
                self.stats.labels_unsent += self.pending.drop_all()
                return
            # Ticks keep their period whatever a send took, so a label waits at most one
            # interval past its delay (plus a send that outlasts the interval).
            ticks += 1
            wait = start + ticks * interval - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            else:
                start, ticks = self.clock.now(), 0

    def _give_up_at(self, batch: list[tuple[float, Label]]) -> float:
        """When a failing sink has had its grace: ``label_grace_s`` after the last label
        (of ``batch`` or still waiting) was due, or after the stop when that is later (a
        stop drops the labels not due yet, so the last due is no later than the stop plus
        the users' last requests); never while the visits last."""
        if not self._visits_done:
            return float("inf")
        dues = [due for due, _ in batch]
        waiting = self.pending.last_due()
        if waiting is not None:
            dues.append(waiting)
        if self._stopped_at is not None:
            dues.append(self._stopped_at)
        return max(dues, default=self.clock.now()) + self.label_grace_s


def _release(free: asyncio.Queue[int], slot: int, _: asyncio.Task[None]) -> None:
    free.put_nowait(slot)

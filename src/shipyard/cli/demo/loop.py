"""The loop step of ``shipyard demo``: drift → retrain → promote → hot swap, under traffic.

A ``shipyard serve`` server and a ``shipyard stream`` scorer on the embedded broker answer
simulated users (``shipyard traffic``'s engine): some over HTTP, some through the broker,
each labelling about half of its answers a moment later. At ``DRIFT_AT_S`` the users switch
to drifted rows (``new-fraud``: most features move and a new fraud pattern appears). A
monitor with the pipeline's retrainer, as ``shipyard monitor`` builds it, runs meanwhile:
it flags the drift, retrains on the newest labelled rows, gates the candidate against
production on the newest of them and promotes it; the server and the scorer follow the alias.
The users go on a few seconds to show answers from the new version, then stop.

The timeline is read from the registry's events (what ``shipyard monitor events`` shows)
and the users' own clock, both as seconds since the traffic started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console

from shipyard.errors import NotFoundError
from shipyard.messaging.embedded import broker_url
from shipyard.monitoring.log import open_prediction_log
from shipyard.monitoring.monitor import Monitor, MonitorOptions, check_log
from shipyard.pipeline.retrain import PipelineRetrainer
from shipyard.registry import DEFAULT_ALIAS, ModelRef, Registry
from shipyard.registry.users import Role, Users
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings
from shipyard.stream.process import StreamProcess
from shipyard.stream.scorer import ScorerConfig
from shipyard.traffic.config import Protocol, TrafficConfig
from shipyard.traffic.rows import load_pool
from shipyard.traffic.runner import Destination, prepared, run_on_uvloop
from shipyard.traffic.summary import TrafficStats

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from shipyard.registry.events import EventRecord
    from shipyard.traffic.rows import RowPool

MODEL = "fraud"
SCENARIO = "new-fraud"
HTTP_USERS = 12
STREAM_USERS = 6
LABEL_PROBABILITY = 0.5
LABEL_DELAY_S = (0.2, 1.0)
THINK_S = (0.0, 0.05)
#: Seconds of undrifted traffic before the users switch to the drifted rows.
DRIFT_AT_S = 8.0
MONITOR_INTERVAL_S = 2.0
#: Seconds the users go on once both the server and the scorer answer from the new version.
AFTER_SWAP_S = 4.0
#: The longest the users run, promotion or not (a bound, not an expectation).
LIMIT_S = 100.0
#: Transactions the users draw from (with replacement), before and after the drift.
POOL_ROWS = 20_000
POLL_S = 0.25
#: Seconds each channel has, after the promotion, to answer from the new version.
ANSWER_WAIT_S = 30.0
#: Seconds stopped users have to finish their requests and send their due labels.
STOP_WAIT_S = 15.0
#: The timeline's events: the loop's; a monitor may add others (performance.*, skips).
LOOP_EVENTS = (
    "drift.detected",
    "retrain.triggered",
    "retrain.trained",
    "retrain.gated",
    "model.promoted",
)

#: The demo's own retrain rules, written into its spec instead of the packaged spec's
#: ``retrain:`` section (the rest of the spec is the packaged one).
DEMO_RULES = """\
# The demo's loop runs in under a minute, so its rules are scaled down from the packaged
# spec's. Drift is judged over the last 6,000 predictions, and a feature counts as drifted
# once it has moved a quarter of its spread (Evidently's default flags a tenth): so drift is
# flagged when about half of those predictions have drifted, and some 1,500 of them are
# labelled by then — enough to learn the new fraud from. A drop in live performance alone
# does not retrain here: it shows within a few hundred labels of new fraud, too few to learn
# it. A retrain learns from the newest 2,000 labelled rows plus 2 % of the current version's
# training rows; the candidate is promoted only if it beats production by 0.05 of average
# precision on the newest 30 % of those rows, which it did not train on. The cooldown
# outlasts the demo's loop (the packaged spec's: 1h).
monitoring:
  windows: {rows: 6000}
  drift: {method: wasserstein, threshold: 0.25}
retrain:
  triggers:
    drift.detected: true
    performance.degraded: false
    manual: true
  data: {last: 2000, original: 0.02, min_rows: 1000}
  gate: {metric: average_precision, min_delta: 0.05, holdout: 0.3}
  cooldown: 20s
"""
_RULES_START = "# Retraining on evidence"


def demo_spec_text(text: str) -> str:
    """The packaged spec's text with the demo's monitoring and retrain rules."""
    head, found, _ = text.partition(_RULES_START)
    if not found:
        raise ValueError(f"the packaged fraud spec has no {_RULES_START!r} section to replace")
    return head + DEMO_RULES


@dataclass
class Channel:
    """One kind of user: what they were sent to, and what they saw."""

    name: str
    stats: TrafficStats = field(default_factory=TrafficStats)

    @property
    def over(self) -> str:
        """The channel in a sentence: "over {over}"."""
        return "the broker" if self.name == "broker" else self.name

    def first_answer(self, version: int | None) -> float | None:
        """When (``perf_counter``) a version first answered these users; None: never."""
        return None if version is None else self.stats.versions_first.get(str(version))

    @property
    def failed(self) -> int:
        """Requests that got no answer (label batches given up on are not requests)."""
        return self.stats.requests - self.stats.succeeded

    @property
    def request_errors(self) -> dict[str, int]:
        """Failed requests by kind (without the label failures the stats may count in)."""
        return {k: n for k, n in self.stats.errors.items() if not k.startswith("labels: ")}


@dataclass
class LoopRun:
    """What the loop step saw."""

    started: float
    """``perf_counter`` when the users started."""
    started_at: datetime
    old: int
    new: int | None
    http: Channel
    stream: Channel
    events: list[EventRecord]
    stopped: float = 0.0
    problems: list[str] = field(default_factory=list)
    """What went wrong on the way (a channel that never answered from the new version)."""

    def at(self, when: float | datetime | None) -> float | None:
        """Seconds since the users started."""
        if when is None:
            return None
        if isinstance(when, datetime):
            moment = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
            return (moment - self.started_at).total_seconds()
        return when - self.started

    @property
    def failed(self) -> int:
        """Requests of both channels that got no answer."""
        return self.http.failed + self.stream.failed

    @property
    def labels_failed(self) -> int:
        """Labels of both channels given up on."""
        return self.http.stats.labels_failed + self.stream.stats.labels_failed

    def event(self, kind: str) -> EventRecord | None:
        """The first event of a kind."""
        return next((e for e in self.events if e.kind == kind), None)

    def gated(self) -> EventRecord | None:
        """The gate that decided the promotion: the ``retrain.gated`` event of the new
        version's candidate, else the last one."""
        gates = [e for e in self.events if e.kind == "retrain.gated"]
        for event in gates:
            if (
                self.new is not None
                and (event.evidence.get("candidate") or {}).get("version") == self.new
            ):
                return event
        return gates[-1] if gates else None

    @property
    def drift_started(self) -> float | None:
        """When the first users switched to the drifted rows (``perf_counter``)."""
        starts = [
            c.stats.drift_started_at
            for c in (self.http, self.stream)
            if c.stats.drift_started_at is not None
        ]
        return min(starts) if starts else None


def _production(registry: Registry) -> int:
    return registry.get_version(ModelRef(MODEL, None, DEFAULT_ALIAS)).version


def _last_event_id(registry: Registry) -> int:
    latest = registry.monitoring.events(MODEL, limit=1, newest_first=True)
    return latest[0].id if latest else 0


@contextlib.contextmanager
def _feedback_key(registry: Registry) -> Iterator[str]:
    """An operator API key for the users' labels (``POST /v1/feedback`` needs one), revoked
    after the step; its name is new each run (a revoked key keeps its name)."""
    users = Users(registry)
    name = f"demo-traffic-{uuid.uuid4().hex[:8]}"
    _, secret = users.create_api_key(name, Role.OPERATOR)
    try:
        yield secret
    finally:
        users.revoke_api_key(name)


def run_loop(
    registry: Registry, settings: Settings, *, seed: int, out: Console
) -> tuple[LoopRun, str]:
    """Serve, stream, monitor and retrain under drifting traffic; the run and the server's
    ``/ui`` address (gone once the step ends)."""
    pool = load_pool(data=None, rows=POOL_ROWS, drift=SCENARIO, seed=seed + 300_000)
    logs = settings.home / "logs"
    with broker_url(settings) as url:
        live = settings.model_copy(
            update={"broker_url": url, "monitor_interval_seconds": MONITOR_INTERVAL_S}
        )
        with (
            _feedback_key(registry) as key,
            ServerProcess(settings, log=logs / "demo-loop-server.log") as server,
            StreamProcess(
                live, ScorerConfig(model=MODEL), workers=1, log=logs / "demo-loop-stream.log"
            ),
        ):
            ui = f"{server.url}/ui"
            out.print(
                f"server on {server.url} (its dashboard, {ui}, is there while this step "
                f"runs); a scorer on {url}"
            )
            out.print(
                f"{HTTP_USERS} users over HTTP (OIP) and {STREAM_USERS} through the broker "
                f"label about {LABEL_PROBABILITY:.0%} of their answers "
                f"{LABEL_DELAY_S[0]:g}–{LABEL_DELAY_S[1]:g} s later; at {DRIFT_AT_S:g} s "
                f"they switch to drifted rows ({SCENARIO}); a monitor every "
                f"{MONITOR_INTERVAL_S:g} s retrains on drift",
                soft_wrap=True,
            )
            destination = Destination(url=server.url, broker_url=url, api_key=key)
            with _quiet_event_lines():
                run = run_on_uvloop(lambda: _loop(registry, live, destination, pool, seed))
    return run, ui


async def _loop(
    registry: Registry, settings: Settings, destination: Destination, pool: RowPool, seed: int
) -> LoopRun:
    broker = destination.broker_url
    assert broker is not None
    log = check_log(open_prediction_log(settings))
    options = MonitorOptions(models=(MODEL,), broker_url=broker)
    retrainer = PipelineRetrainer(registry, log, settings, owner=options.owner)
    monitor = Monitor(registry, log, settings, options, retrainer=retrainer)
    after_id = await asyncio.to_thread(_last_event_id, registry)
    old = await asyncio.to_thread(_production, registry)
    http, stream = Channel("HTTP"), Channel("broker")
    config = TrafficConfig(
        model=MODEL,
        protocol=Protocol.OIP,
        users=HTTP_USERS,
        duration_s=LIMIT_S,
        seed=seed,
        label_probability=LABEL_PROBABILITY,
        label_delay_min_s=LABEL_DELAY_S[0],
        label_delay_max_s=LABEL_DELAY_S[1],
        think_min_s=THINK_S[0],
        think_max_s=THINK_S[1],
        drift_at_s=DRIFT_AT_S,
    )
    streamed = replace(config, protocol=Protocol.STREAM, users=STREAM_USERS, seed=seed + 1)
    stop = asyncio.Event()
    monitoring: asyncio.Task[Any] | None = None
    problems: list[str] = []
    try:
        async with (
            prepared(config, pool, destination) as over_http,
            prepared(streamed, pool, destination) as queued,
        ):
            http.stats, stream.stats = over_http.users.stats, queued.users.stats
            started_at, started = datetime.now(UTC), time.perf_counter()
            monitoring = asyncio.create_task(monitor.run(stop=stop))
            users = [asyncio.create_task(r.users.run()) for r in (over_http, queued)]
            try:
                new = await _until_swapped(registry, old, users, monitoring, (http, stream))
                problems = _not_answering(new, (http, stream))
                if new is not None and not problems:
                    await _run_on(users, AFTER_SWAP_S)
            finally:
                # Also on an error or Ctrl-C: no user outlives its connections.
                for run in (over_http, queued):
                    run.users.stop()
                outcomes = await _ended(users)
            stopped = time.perf_counter()
            stop.set()
            # Its pass, then its wait for a retrain (at most the lease's TTL), then its exit.
            await _stopped(monitoring, 2 * settings.retrain_lock_ttl_seconds + STOP_WAIT_S)
            for outcome in outcomes:
                # A user cancelled past STOP_WAIT_S is no error of the loop's; a failed one is.
                if isinstance(outcome, Exception):
                    raise outcome
    finally:
        stop.set()
        if monitoring is not None and not monitoring.done() and not monitoring.cancelling():
            # The step failed midway: the monitor still ends cleanly (releases its lease).
            await asyncio.wait([monitoring], timeout=settings.retrain_lock_ttl_seconds)
        log.close()
    events = await asyncio.to_thread(
        registry.monitoring.events, MODEL, after_id=after_id, limit=1000
    )
    return LoopRun(started, started_at, old, new, http, stream, events, stopped, problems)


async def _until_swapped(
    registry: Registry,
    old: int,
    users: list[asyncio.Task[TrafficStats]],
    monitoring: asyncio.Task[Any],
    channels: tuple[Channel, Channel],
) -> int | None:
    """Wait for a new production version, then until both channels answered from it (at
    most ``ANSWER_WAIT_S``); the new version (None: none came before the users' bound).
    Raises what a user task or the monitor failed with, as soon as it does."""
    new = None
    while new is None:
        _raise_failed([*users, monitoring])
        if all(task.done() for task in users) or monitoring.done():
            return None
        await asyncio.sleep(POLL_S)
        try:
            current = await asyncio.to_thread(_production, registry)
        except NotFoundError:
            continue
        if current != old:
            new = current
    deadline = time.perf_counter() + ANSWER_WAIT_S
    while time.perf_counter() < deadline and not all(task.done() for task in users):
        _raise_failed(users)
        if all(channel.first_answer(new) is not None for channel in channels):
            break
        await asyncio.sleep(POLL_S)
    return new


def _not_answering(new: int | None, channels: tuple[Channel, ...]) -> list[str]:
    """A sentence per channel that never answered from the new version."""
    if new is None:
        return []
    return [
        f"v{new} never answered over {channel.over} within {ANSWER_WAIT_S:g} s"
        for channel in channels
        if channel.first_answer(new) is None
    ]


def _raise_failed(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error


async def _run_on(users: list[asyncio.Task[TrafficStats]], seconds: float) -> None:
    """Let the users go on for ``seconds``; raise at once if one of them fails."""
    done, _ = await asyncio.wait(users, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    _raise_failed(list(done))


async def _ended(tasks: list[asyncio.Task[TrafficStats]]) -> list[Any]:
    """Wait for stopped users (cancel them past ``STOP_WAIT_S``); their results or errors.
    A user that outlives its cancellation by another ``STOP_WAIT_S`` is left behind (said
    in a warning, its result None): the step ends whatever a user does."""
    _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=STOP_WAIT_S)
        for task in stuck:
            logger.warning("a traffic user did not end when cancelled; leaving it: %s", task)
    return [_outcome(task) for task in tasks]


def _outcome(task: asyncio.Task[TrafficStats]) -> Any:
    """A user's result or error; None for one cancelled or still running."""
    if not task.done() or task.cancelled():
        return None
    error = task.exception()
    return error if error is not None else task.result()


async def _stopped(monitoring: asyncio.Task[Any], timeout_s: float) -> None:
    """Wait for the monitor, told to stop, to end its pass (at most ``timeout_s``: a retrain
    it started finishes first); past that it is cancelled, and left behind if it does not
    end within ``STOP_WAIT_S`` either. Raises what the monitor failed with."""
    done, _ = await asyncio.wait([monitoring], timeout=timeout_s)
    if not done:
        logger.warning("the monitor did not stop within %g s; cancelling it", timeout_s)
        monitoring.cancel()
        done, _ = await asyncio.wait([monitoring], timeout=STOP_WAIT_S)
    if done and not monitoring.cancelled():
        monitoring.result()  # its error, if it failed


@contextlib.contextmanager
def _quiet_event_lines() -> Iterator[None]:
    """Drop the monitor's log lines about events while the step runs: its timeline shows
    them, and they would land in the middle of the step's output. Other warnings show."""
    lines = {"%s v%s: %s %s", "%s: retrain %s: %s"}

    def keep(record: logging.LogRecord) -> bool:
        return record.msg not in lines

    monitor_log = logging.getLogger(Monitor.__module__)
    monitor_log.addFilter(keep)
    try:
        yield
    finally:
        monitor_log.removeFilter(keep)

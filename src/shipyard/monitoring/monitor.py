"""``shipyard monitor``: watch models' predictions, feedback, performance and drift, live.

Any number of monitors may run: each model is owned by one of them through a lease in the
registry database, renewed every cycle and, while ``run`` runs, every third of its TTL by a
task of its own (a long rebuild or many models never let it lapse); another monitor takes
the model over once it expires (its holder died). Every write of a model's state goes
through the store ``held_by`` this monitor, which refuses it once the lease is gone
(``LeaseLostError``): the monitor then lets the model go.

A cycle, for each owned model: take in labels from the broker queue ``<model>.feedback``,
then ``ModelTracker.update`` (log → windows, feedback → joins, verdicts → events and
snapshots), then publish to ``<model>.events`` every event above the model's ``events``
cursor, in order, and move the cursor: the events table is an outbox, so an event a failed
publish or a killed monitor did not send is sent by the next cycle or the next owner (at
least once; consumers tell repeats by the event's ``id`` or ``key``). Last, when the
monitor was handed a ``Retrainer``, the model's retrain starts if a trigger is due
(``monitoring/retraining.py``), in a thread, while the cycles go on.

One model's failure is that model's: it is logged, counted
(``shipyard_monitor_errors_total``), shown as the model's last error in the report, and the
model is tried again after a back-off that doubles up to ``MAX_BACKOFF_SECONDS``; the other
models go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from shipyard.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    LeaseLostError,
    ModelNotFoundError,
    ShipyardError,
    UnavailableError,
)
from shipyard.messaging import Broker, Delivery, QueueSpec, open_broker
from shipyard.monitoring.log import cutoff
from shipyard.monitoring.metrics import MonitorMetrics
from shipyard.monitoring.report import STATUS_CURSOR, event_document
from shipyard.monitoring.retraining import Retrainer, RetrainOutcome, RetrainTasks
from shipyard.monitoring.tracker import CycleResult, ModelTracker, TrackerOptions

if TYPE_CHECKING:
    from shipyard.monitoring.log import PredictionLog
    from shipyard.registry import Registry
    from shipyard.registry.events import EventRecord
    from shipyard.settings import Settings

logger = logging.getLogger(__name__)

#: Feedback messages taken from a model's queue per cycle at most.
FEEDBACK_BATCH = 5_000
#: How long a cycle waits for the first feedback message (some backends need a moment).
FEEDBACK_WAIT_MS = 50.0
#: How often the list of models is read again when no list was given.
RELIST_SECONDS = 30.0
#: How often expired prediction-log files and settled feedback rows are removed.
EXPIRE_SECONDS = 3600.0
#: Events published to a model's queue per cycle at most (the rest go next cycle).
PUBLISH_BATCH = 1_000
#: The longest wait before a failing model is tried again.
MAX_BACKOFF_SECONDS = 300.0
#: The cursor (``save_cursor``) of the last event published.
EVENTS_CURSOR = "events"


def feedback_queue(model: str) -> str:
    """The queue a model's asynchronous labellers publish ``{id, label}`` messages to."""
    return f"{model}.feedback"


def events_queue(model: str) -> str:
    """The queue a model's monitor events are published to."""
    return f"{model}.events"


def default_owner() -> str:
    """This process's name in leases: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class MonitorOptions:
    """What ``shipyard monitor`` was asked to do."""

    models: tuple[str, ...] | None = None  # None: every model, re-listed
    window_rows: int | None = None
    window_minutes: float | None = None
    broker_url: str | None = None  # None: no broker (no feedback queue, events wait)
    owner: str = field(default_factory=default_owner)


@dataclass
class ModelFailure:
    """The last error of a model, and when it is tried again."""

    error: str
    at: datetime
    failures: int  # in a row
    retry_at: float  # time.monotonic()

    def document(self) -> dict[str, Any]:
        """As shown in the report (``monitor.error``)."""
        return {"error": self.error, "at": self.at.isoformat(), "failures": self.failures}


@dataclass
class CycleReport:
    """What one cycle did, per model."""

    owned: list[str] = field(default_factory=list)
    results: dict[str, CycleResult] = field(default_factory=dict)
    queued_feedback: dict[str, int] = field(default_factory=dict)
    published: int = 0
    publish_failures: int = 0
    errors: dict[str, ShipyardError | Exception] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # failed earlier, backing off
    retrains: dict[str, RetrainOutcome] = field(default_factory=dict)  # finished meanwhile


class Monitor:
    """Owns models by lease and runs their trackers, cycle after cycle."""

    def __init__(
        self,
        registry: Registry,
        log: PredictionLog,
        settings: Settings,
        options: MonitorOptions | None = None,
        *,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retrainer: Retrainer | None = None,
    ) -> None:
        self.registry = registry
        self.store = registry.monitoring
        self.log = log
        self.settings = settings
        self.options = options or MonitorOptions()
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.trackers: dict[str, ModelTracker] = {}
        self.failures: dict[str, ModelFailure] = {}
        self.held = self.store.held_by(self.options.owner)
        """The store this monitor writes model state through: only while it holds the lease."""
        self._tracker_options = TrackerOptions(
            feedback_window_s=settings.feedback_window_hours * 3600,
            index_rows=settings.monitor_index_rows,
            grace_s=settings.feedback_grace_seconds,
            window_rows=self.options.window_rows,
            window_minutes=self.options.window_minutes,
            retention_s=settings.prediction_log_retention_days * 86_400,
            history_s=settings.monitor_history_seconds,
        )
        self._broker: Broker | None = None
        self._declared: set[str] = set()
        self._models: list[str] = []
        self._listed_at = -float("inf")
        self._expired_at = -float("inf")
        self._lost: set[str] = set()  # leases the renewal task found taken
        self._renewer: asyncio.Task[None] | None = None
        self.retrains = (
            None
            if retrainer is None
            else RetrainTasks(registry, retrainer, on_outcome=self._retrained)
        )
        """The retrains this monitor runs for the models it owns (None: it retrains none)."""

    # -- models and leases ------------------------------------------------------------------

    def models(self) -> list[str]:
        """The models to watch: those given (each must exist), else every model."""
        if self.options.models is not None:
            if not self._models:
                self.check_models()
                self._models = list(self.options.models)
            return self._models
        if time.monotonic() - self._listed_at >= RELIST_SECONDS:
            self._models = [m.name for m in self.registry.list_models()]
            self._listed_at = time.monotonic()
        return self._models

    def check_models(self) -> None:
        """``ModelNotFoundError`` naming the models given that do not exist, and those that
        do: a mistyped name must stop the monitor, not fail every cycle for ever."""
        if self.options.models is None:
            return
        known = [m.name for m in self.registry.list_models()]
        missing = [name for name in self.options.models if name not in known]
        if missing:
            raise ModelNotFoundError(
                f"no model named {', '.join(missing)} to monitor; the registry has "
                f"{', '.join(known) if known else 'no model yet'} (check --models)"
            )

    def _own(self, model: str) -> bool:
        """Take or renew the model's lease; False (and its state dropped) when another
        monitor holds it."""
        owner, ttl = self.options.owner, self.settings.monitor_lease_ttl_seconds
        if not self.store.acquire_lease(model, owner, ttl):
            if model in self.trackers:
                logger.warning("lost the lease on %s to another monitor", model)
                del self.trackers[model]
                self.metrics.forget(model)
            return False
        self.metrics.lease.labels(model).set(1)
        return True

    def _tracker(self, model: str) -> ModelTracker:
        """The tracker of a model whose lease this monitor holds, rebuilt on first use."""
        tracker = self.trackers.get(model)
        if tracker is None:
            tracker = ModelTracker(
                model, self.registry, self.log, self._tracker_options, self.clock
            )
            # Its writes only while the lease is held (ModelTracker reads registry.monitoring).
            tracker.store = tracker.episodes.store = self.held
            # Held before the rebuild: ``renew`` keeps the lease of a rebuild longer than it.
            self.trackers[model] = tracker
            try:
                tracker.rebuild()
            except BaseException:
                if self.trackers.get(model) is tracker:
                    del self.trackers[model]
                raise
            logger.info("monitoring %s (lease %s)", model, self.options.owner)
        return tracker

    def _let_go(self, model: str) -> None:
        """Forget a model whose lease another monitor has (its state is theirs now)."""
        if self.trackers.pop(model, None) is not None:
            logger.warning("lost the lease on %s to another monitor", model)
        self._lost.discard(model)
        self.metrics.forget(model)

    def renew(self) -> list[str]:
        """Renew the lease of every model held; those found lost are let go at the next
        cycle (returned)."""
        owner, ttl = self.options.owner, self.settings.monitor_lease_ttl_seconds
        lost = []
        for model in list(self.trackers):
            try:
                if not self.store.acquire_lease(model, owner, ttl):
                    lost.append(model)
            except ShipyardError as error:  # the next renewal or the cycle tries again
                logger.warning("could not renew the lease on %s: %s", model, error)
        self._lost.update(lost)
        return lost

    async def _renew_forever(self) -> None:
        period = self.settings.monitor_lease_ttl_seconds / 3
        while True:
            await asyncio.sleep(period)
            await asyncio.to_thread(self.renew)

    def release(self) -> None:
        """Give up every lease (a clean exit): another monitor takes the models at once."""
        for model in list(self.trackers):
            try:
                self.store.release_lease(model, self.options.owner)
            except ShipyardError as error:
                logger.warning("could not release the lease on %s: %s", model, error)
            self.metrics.forget(model)
        self.trackers.clear()

    # -- cycles ---------------------------------------------------------------------------

    async def cycle(self) -> CycleReport:
        """One pass over the models: feedback queues, trackers, events to the broker. A
        model that fails is reported in ``errors`` and skipped until its back-off ends."""
        async with self._renewing():
            return await self._cycle()

    @contextlib.asynccontextmanager
    async def _renewing(self) -> AsyncIterator[None]:
        """Renew the leases from a task of their own while the block runs (unless one runs
        already: ``run`` keeps one for its whole life)."""
        if self._renewer is not None:
            yield
            return
        self._renewer = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            renewer, self._renewer = self._renewer, None
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _cycle(self) -> CycleReport:
        started = time.perf_counter()
        report = CycleReport()
        for model in await asyncio.to_thread(self.models):
            failure = self.failures.get(model)
            if failure is not None and time.monotonic() < failure.retry_at:
                report.waiting.append(model)
                continue
            try:
                await self._cycle_model(model, report)
            except ModelNotFoundError:
                self.failures.pop(model, None)  # removed meanwhile
            except LeaseLostError as error:
                logger.warning("%s", error)
                self._let_go(model)
                if self._broker is not None:
                    await self._reconnect()
            except Exception as error:  # one model's failure stops no other
                await self._failed(model, error, report)
            else:
                if failure is not None:
                    await self._recovered(model)
        await asyncio.to_thread(self._housekeeping)
        if self.retrains is not None:
            report.retrains = self.retrains.take_outcomes()
        self.metrics.cycle.observe(time.perf_counter() - started)
        return report

    async def _cycle_model(self, model: str, report: CycleReport) -> None:
        held = model in self.trackers
        if model in self._lost:
            self._let_go(model)
        if not await asyncio.to_thread(self._own, model):
            if held and self._broker is not None:
                await self._reconnect()
            return
        report.owned.append(model)
        tracker = await asyncio.to_thread(self._tracker, model)
        if self._broker is not None:
            report.queued_feedback[model] = await self._take_feedback(model)
        result = await asyncio.to_thread(tracker.update)
        report.results[model] = result
        self.metrics.log_rows.labels(model).inc(result.rows)
        for number, snapshot in result.snapshots.items():
            self.metrics.snapshot(model, number, snapshot)
        counts = await asyncio.to_thread(self.store.feedback_counts, model)
        self.metrics.feedback(model, counts)
        for event in result.events:
            self.metrics.events.labels(model, event.kind).inc()
            logger.warning("%s v%s: %s %s", model, event.version, event.kind, event.key)
        if self._broker is not None:
            published, failed = await self._publish_outbox(model)
            report.published += published
            report.publish_failures += failed
        if self.retrains is not None:
            await self._consider_retrain(model)

    async def _consider_retrain(self, model: str) -> None:
        """Start the model's retrain if one is due; a failure to decide (e.g. a version's
        invalid ``retrain`` tag) is logged and counted, and the model's monitoring goes on."""
        assert self.retrains is not None
        try:
            await self.retrains.consider(model, self.held, self.clock())
        except LeaseLostError:  # the model is no longer ours: the cycle lets it go
            raise
        except Exception as error:  # retraining's trouble must not stop monitoring
            self.metrics.errors.labels(model, type(error).__name__).inc()
            logger.error(
                "could not decide whether to retrain %s (monitoring goes on): %s: %s",
                model,
                type(error).__name__,
                error,
                exc_info=not isinstance(error, ShipyardError),
            )

    def _retrained(self, outcome: RetrainOutcome) -> None:
        """Count a retrain's events (``shipyard_monitor_events_total``) and log its end."""
        for event in outcome.events:
            self.metrics.events.labels(outcome.model, event.kind).inc()
        if outcome.events:  # a refusal asked again each cycle (cooldown) is logged once
            logger.warning("%s: retrain %s: %s", outcome.model, outcome.status, outcome.reason)

    async def _failed(self, model: str, error: Exception, report: CycleReport) -> None:
        """Log, count and show a model's error; try it again after a back-off."""
        before = self.failures.get(model)
        failures = 1 if before is None else before.failures + 1
        delay = min(
            self.settings.monitor_interval_seconds * 2 ** (failures - 1), MAX_BACKOFF_SECONDS
        )
        text = f"{type(error).__name__}: {error}"
        self.failures[model] = failure = ModelFailure(
            text, self.clock(), failures, time.monotonic() + delay
        )
        report.errors[model] = error
        self.metrics.errors.labels(model, type(error).__name__).inc()
        logger.error(
            "monitoring %s failed (%d in a row; next try in %.0f s): %s",
            model,
            failures,
            delay,
            text,
            exc_info=not isinstance(error, ShipyardError),
        )
        # Retryable or not, its state may be ahead of the store's (a cycle's writes are one
        # transaction, ``commit_cycle``): rebuilt from what was committed next time.
        self.trackers.pop(model, None)
        await asyncio.to_thread(self._save_status, model, failure.document())

    async def _recovered(self, model: str) -> None:
        self.failures.pop(model, None)
        logger.info("monitoring %s works again", model)
        await asyncio.to_thread(self._save_status, model, None)

    def _save_status(self, model: str, error: dict[str, Any] | None) -> None:
        """The model's last error (None: it works) where the report shows it."""
        try:
            self.held.save_cursor(
                model, STATUS_CURSOR, {"owner": self.options.owner, "error": error}
            )
        except Exception as failure:  # the status is a courtesy
            logger.warning("could not save the status of %s: %s", model, failure)

    def _housekeeping(self) -> None:
        """Expire old prediction-log files, settled feedback and history points of the models
        held, hourly."""
        if time.monotonic() - self._expired_at < EXPIRE_SECONDS:
            return
        self._expired_at = time.monotonic()
        try:
            removed = self.log.expire(cutoff(self.settings.prediction_log_retention_days))
            if removed:
                logger.info("expired %d prediction-log files or rows", removed)
        except Exception as error:  # retried next time
            logger.warning("could not expire the prediction log: %s", error)
        days = self.settings.feedback_retention_days or self.settings.prediction_log_retention_days
        for model in list(self.trackers):
            try:
                removed = self.held.expire_feedback(model, cutoff(days))
                if removed:
                    logger.info("expired %d settled feedback rows of %s", removed, model)
            except Exception as error:  # retried next time
                logger.warning("could not expire the feedback of %s: %s", model, error)
            try:
                removed = self.held.expire_history(
                    model, cutoff(self.settings.monitor_history_days)
                )
                if removed:
                    logger.info("expired %d monitoring history points of %s", removed, model)
            except Exception as error:  # retried next time
                logger.warning("could not expire the monitoring history of %s: %s", model, error)

    async def run(
        self, *, once: bool = False, stop: asyncio.Event | None = None
    ) -> CycleReport | None:
        """Cycle every ``monitor_interval_seconds`` until ``stop`` is set; with ``once``, one
        cycle, whose report is returned. Leases are renewed meanwhile; all are released at
        the end. A model named in ``options.models`` that does not exist is a
        ``ModelNotFoundError`` at once."""
        stop = stop or asyncio.Event()
        try:  # before the loop, which tries a failed cycle again for ever
            await asyncio.to_thread(self.check_models)
        except UnavailableError as error:  # the first cycle checks again
            logger.warning("cannot check the models to monitor yet: %s", error)
        await self.connect()
        try:
            async with self._renewing():
                return await self._loop(once, stop)
        finally:
            if self.retrains is not None:  # one still running delays the exit (``drain``)
                await self.retrains.drain(self.settings.retrain_lock_ttl_seconds)
            await asyncio.to_thread(self.release)
            await self.disconnect()

    async def _loop(self, once: bool, stop: asyncio.Event) -> CycleReport | None:
        while True:
            try:
                report = await self.cycle()
            except ModelNotFoundError:  # a model given by name does not exist: no retry helps
                raise
            except ShipyardError as error:
                if once:
                    raise
                logger.warning("monitor cycle failed, trying again: %s", error)
            except Exception:
                if once:
                    raise
                logger.exception("monitor cycle failed, trying again")
            else:
                if once:
                    if self.retrains is not None:  # a pass finishes the retrains it started
                        await self.retrains.drain()
                        report.retrains.update(self.retrains.take_outcomes())
                    return report
            try:
                await asyncio.wait_for(stop.wait(), self.settings.monitor_interval_seconds)
                return None
            except TimeoutError:
                pass

    # -- the broker -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the broker ``options.broker_url`` names (None: no queues are used)."""
        if self.options.broker_url and self._broker is None:
            self._broker = open_broker(self.options.broker_url)

    async def disconnect(self) -> None:
        """Close the broker connection; deliveries taken and not acked go back."""
        broker, self._broker = self._broker, None
        self._declared.clear()
        if broker is not None:
            await broker.close()

    async def _reconnect(self) -> None:
        """Stop taking the feedback of a model this monitor lost to another: a broker that
        pushes messages to its consumers (RabbitMQ, with its prefetch) goes on handing this
        connection a share of ``<model>.feedback`` that no one here takes, until the
        connection closes — and the new owner never sees them. A new connection has no such
        consumer; closing the old one returns what it held to the queue at once."""
        await self.disconnect()
        await self.connect()

    async def _declared_queue(self, queue: str) -> Broker:
        assert self._broker is not None
        if queue not in self._declared:
            await self._broker.declare(QueueSpec(queue))
            self._declared.add(queue)
        return self._broker

    async def _take_feedback(self, model: str) -> int:
        """Store the labels waiting in ``<model>.feedback``; a message that is not valid
        feedback is dead-lettered with the reason. Returns the labels taken in."""
        queue = feedback_queue(model)
        try:
            broker = await self._declared_queue(queue)
            deliveries = await broker.consume(queue, FEEDBACK_BATCH, FEEDBACK_WAIT_MS)
        except ShipyardError as error:
            logger.warning("cannot read %s: %s", queue, error)
            return 0
        if not deliveries:
            return 0
        good: list[tuple[Delivery, list[Any]]] = []
        for delivery in deliveries:
            try:
                good.append((delivery, _feedback_items(delivery.body)))
            except InvalidInputError as error:
                await _settle(broker.reject(queue, delivery, str(error)), queue)
        taken = 0
        kept: list[Delivery] = []
        for group in _groups(good, self.settings.max_feedback_items):
            group_taken, group_kept = await self._store_feedback(model, broker, queue, group)
            taken += group_taken
            kept += group_kept
        await _settle(broker.ack(queue, kept), queue)
        return taken

    async def _store_feedback(
        self, model: str, broker: Broker, queue: str, good: list[tuple[Delivery, list[Any]]]
    ) -> tuple[int, list[Delivery]]:
        """Store a group of messages' labels in one transaction; a message refused (a bad
        item, more than ``max_feedback_items``) is dead-lettered with the reason. Returns
        the labels taken in and the deliveries to ack."""
        taken = 0
        try:
            taken = await asyncio.to_thread(self._ingest, model, [items for _, items in good])
        except LeaseLostError:
            raise
        except ConflictError as error:  # the model has no label schema: no label fits
            reason = f"feedback for {model} cannot be stored: {error}"
            for delivery, _ in good:
                await _settle(broker.reject(queue, delivery, reason), queue)
            return 0, []
        except InvalidInputError:  # one bad message refuses a batch: find it
            for delivery, items in good:
                try:
                    taken += await asyncio.to_thread(self._ingest, model, [items])
                except InvalidInputError as error:
                    await _settle(broker.reject(queue, delivery, str(error)), queue)
                    good = [(d, i) for d, i in good if d is not delivery]
        return taken, [delivery for delivery, _ in good]

    def _ingest(self, model: str, batches: Sequence[list[Any]]) -> int:
        from shipyard.monitoring.feedback import ingest_feedback

        items = [item for batch in batches for item in batch]
        if not items:
            return 0
        return ingest_feedback(
            self.registry, model, items, "queue", max_items=self.settings.max_feedback_items
        ).accepted

    async def _publish_outbox(self, model: str) -> tuple[int, int]:
        """Publish the model's events above its ``events`` cursor, in order, then move the
        cursor; (published, failed)."""
        cursor = await asyncio.to_thread(self.store.cursor, model, EVENTS_CURSOR)
        after = int(cursor["id"]) if cursor else 0
        events = await asyncio.to_thread(
            self.store.events, model, after_id=after, limit=PUBLISH_BATCH
        )
        if not events:
            return 0, 0
        if not await self._publish(model, events):
            return 0, len(events)
        await asyncio.to_thread(self.held.save_cursor, model, EVENTS_CURSOR, {"id": events[-1].id})
        return len(events), 0

    async def _publish(self, model: str, events: Sequence[EventRecord]) -> bool:
        queue = events_queue(model)
        bodies = [orjson.dumps(event_document(event)) for event in events]
        try:
            broker = await self._declared_queue(queue)
            await broker.publish(queue, bodies)
            return True
        except ShipyardError as error:
            self.metrics.publish_failures.labels(model).inc(len(bodies))
            logger.warning(
                "could not publish %d event(s) to %s (sent again next cycle): %s",
                len(bodies),
                queue,
                error,
            )
            return False


async def _settle(done: Awaitable[None], queue: str) -> None:
    """Ack or dead-letter deliveries; a broker lost meanwhile is logged, not raised: the
    labels are stored, the cycle goes on, and the broker delivers the messages again later
    (their labels are then counted as duplicates, a bad one is dead-lettered then)."""
    try:
        await done
    except ShipyardError as error:
        logger.warning("could not settle messages of %s (they come back later): %s", queue, error)


def _groups(
    messages: list[tuple[Delivery, list[Any]]], limit: int
) -> Iterator[list[tuple[Delivery, list[Any]]]]:
    """Consecutive messages whose items add up to at most ``limit`` (one transaction each); a
    message over the limit alone, to be refused naming it."""
    group: list[tuple[Delivery, list[Any]]] = []
    count = 0
    for message in messages:
        if group and count + len(message[1]) > limit:
            yield group
            group, count = [], 0
        group.append(message)
        count += len(message[1])
    if group:
        yield group


def _feedback_items(body: bytes) -> list[Any]:
    """The ``{id, label}`` objects of one queue message (one object or a list of them)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"feedback message is not JSON ({error})") from error
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise InvalidInputError(
            'a feedback message is {"id": ..., "label": ...} or a list of such objects'
        )
    return items


def check_log(log: PredictionLog | None) -> PredictionLog:
    """The log the monitor reads; a clear error when logging is off."""
    if log is None:
        raise ConfigurationError(
            "the prediction log is off (SHIPYARD_PREDICTION_LOG=off), so there is nothing to "
            "monitor; set it to parquet (the default) or a database for the servers, the "
            "scorers and the monitor"
        )
    return log

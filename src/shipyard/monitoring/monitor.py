"""``shipyard monitor``: watch models' predictions, feedback, performance and drift, live.

Any number of monitors may run: each model is owned by one of them through a lease in the
registry database, renewed every cycle and taken over by another monitor once it expires
(its holder died). A cycle, for each owned model: take in labels from the broker queue
``<model>.feedback`` (when a broker is configured), then ``ModelTracker.update`` (log →
windows, feedback → joins, verdicts → events and snapshots), then publish the new events
to ``<model>.events``. The database is the source of truth: a publish that fails is logged
and counted and the monitor goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from shipyard.errors import ConfigurationError, InvalidInputError, NotFoundError, ShipyardError
from shipyard.messaging import Broker, Delivery, QueueSpec, open_broker
from shipyard.monitoring.log import cutoff
from shipyard.monitoring.metrics import MonitorMetrics
from shipyard.monitoring.report import event_document
from shipyard.monitoring.tracker import CycleResult, ModelTracker, TrackerOptions

if TYPE_CHECKING:
    from shipyard.monitoring.log import PredictionLog
    from shipyard.registry import Registry
    from shipyard.registry.monitoring import EventRecord
    from shipyard.settings import Settings

logger = logging.getLogger(__name__)

#: Feedback messages taken from a model's queue per cycle at most.
FEEDBACK_BATCH = 5_000
#: How long a cycle waits for the first feedback message (some backends need a moment).
FEEDBACK_WAIT_MS = 50.0
#: How often the list of models is read again when no list was given.
RELIST_SECONDS = 30.0
#: How often expired prediction-log files are removed.
EXPIRE_SECONDS = 3600.0


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
    broker_url: str | None = None
    owner: str = field(default_factory=default_owner)


@dataclass
class CycleReport:
    """What one cycle did, per model."""

    owned: list[str] = field(default_factory=list)
    results: dict[str, CycleResult] = field(default_factory=dict)
    queued_feedback: dict[str, int] = field(default_factory=dict)
    published: int = 0
    publish_failures: int = 0


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
    ) -> None:
        self.registry = registry
        self.store = registry.monitoring
        self.log = log
        self.settings = settings
        self.options = options or MonitorOptions()
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.trackers: dict[str, ModelTracker] = {}
        self._tracker_options = TrackerOptions(
            feedback_window_s=settings.feedback_window_hours * 3600,
            index_rows=settings.monitor_index_rows,
            grace_s=settings.feedback_grace_seconds,
            window_rows=self.options.window_rows,
            window_minutes=self.options.window_minutes,
        )
        self._broker: Broker | None = None
        self._declared: set[str] = set()
        self._models: list[str] = []
        self._listed_at = -float("inf")
        self._expired_at = -float("inf")

    # -- models and leases ------------------------------------------------------------------

    def models(self) -> list[str]:
        """The models to watch: those given (each must exist), else every model."""
        if self.options.models is not None:
            if not self._models:
                for name in self.options.models:
                    self.registry.get_model(name)  # NotFoundError names it
                self._models = list(self.options.models)
            return self._models
        if time.monotonic() - self._listed_at >= RELIST_SECONDS:
            self._models = [m.name for m in self.registry.list_models()]
            self._listed_at = time.monotonic()
        return self._models

    def _own(self, model: str) -> ModelTracker | None:
        """The tracker of a model this monitor holds the lease of (taken or renewed now)."""
        owner, ttl = self.options.owner, self.settings.monitor_lease_ttl_seconds
        if not self.store.acquire_lease(model, owner, ttl):
            if model in self.trackers:
                logger.warning("lost the lease on %s to another monitor", model)
                del self.trackers[model]
                self.metrics.forget(model)
            return None
        tracker = self.trackers.get(model)
        if tracker is None:
            tracker = ModelTracker(
                model, self.registry, self.log, self._tracker_options, self.clock
            )
            tracker.rebuild()
            self.trackers[model] = tracker
            logger.info("monitoring %s (lease %s)", model, owner)
        self.metrics.lease.labels(model).set(1)
        return tracker

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
        """One pass over the models: feedback queues, trackers, events to the broker."""
        started = time.perf_counter()
        report = CycleReport()
        for model in await asyncio.to_thread(self.models):
            held = model in self.trackers
            try:
                tracker = await asyncio.to_thread(self._own, model)
            except NotFoundError:
                continue  # removed meanwhile
            if tracker is None:
                if held and self._broker is not None:
                    await self._reconnect()
                continue
            report.owned.append(model)
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
            if self._broker is not None and result.events:
                ok = await self._publish(model, result.events)
                report.published += len(result.events) if ok else 0
                report.publish_failures += 0 if ok else len(result.events)
        await asyncio.to_thread(self._expire)
        self.metrics.cycle.observe(time.perf_counter() - started)
        return report

    def _expire(self) -> None:
        if time.monotonic() - self._expired_at < EXPIRE_SECONDS:
            return
        self._expired_at = time.monotonic()
        removed = self.log.expire(cutoff(self.settings.prediction_log_retention_days))
        if removed:
            logger.info("expired %d prediction-log files or rows", removed)

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> None:
        """Cycle every ``monitor_interval_seconds`` until ``stop`` is set (or once)."""
        stop = stop or asyncio.Event()
        await self.connect()
        try:
            while True:
                try:
                    await self.cycle()
                except ShipyardError as error:
                    if once or not error.retryable:
                        raise
                    logger.warning("monitor cycle failed, trying again: %s", error)
                if once:
                    return
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.monitor_interval_seconds)
                    return
                except TimeoutError:
                    pass
        finally:
            await asyncio.to_thread(self.release)
            await self.disconnect()

    # -- the broker -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the broker ``options.broker_url`` names (none: no queues are used)."""
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
        try:
            taken = await asyncio.to_thread(self._ingest, model, [items for _, items in good])
        except InvalidInputError:  # one bad message refuses a batch: find it
            for delivery, items in good:
                try:
                    taken += await asyncio.to_thread(self._ingest, model, [items])
                except InvalidInputError as error:
                    await _settle(broker.reject(queue, delivery, str(error)), queue)
                    good = [(d, i) for d, i in good if d is not delivery]
        await _settle(broker.ack(queue, [delivery for delivery, _ in good]), queue)
        return taken

    def _ingest(self, model: str, batches: Sequence[list[Any]]) -> int:
        from shipyard.monitoring.feedback import ingest_feedback

        items = [item for batch in batches for item in batch]
        if not items:
            return 0
        return ingest_feedback(self.registry, model, items, "queue").accepted

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
                "could not publish %d event(s) to %s (the registry has them): %s",
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

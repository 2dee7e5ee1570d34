"""The stream scorer: consume a batch → check each message → score → publish results → ack.

A thin adapter between a ``Broker`` and the ``InferenceService`` (DESIGN rule 1). Delivery
is at least once: a batch is acked only after the broker confirmed its results (and the
dead letters of its refused messages), so a scorer killed at any point loses nothing — its
unacked messages go to another consumer, at worst scored twice under the same ``id``.

- **Batches in flight.** Up to ``in_flight`` batches are scored and published while the
  next is consumed, so the wait for the broker's confirmations overlaps the work.
- **Bad messages** (not JSON, no ``id``, features that do not fit the model) are
  dead-lettered one by one with the reason; the rest of their batch is scored. A batch the
  model fails on is split, so only the rows it fails on are dead-lettered.
- **Poison messages.** A message delivered more than ``max_deliveries`` times (its
  consumers died holding it) is dead-lettered before it is parsed, so it cannot crash
  workers forever. The brokers count deliveries exactly (``Delivery.attempts``).
- **Backpressure.** When the results queue is full, the batch waits with exponential
  back-off and publishes only what the broker refused (``publish_patiently``); meanwhile
  no slot is free, so the scorer takes no new messages. Nothing is dropped, nothing spins.
- **Broker outages.** Operations that fail because the broker is unreachable are retried
  with back-off until it is back (the clients reconnect); an ack that cannot be delivered
  is given up after a few tries: the broker redelivers that message.
- **Images.** For an image model, messages carry an image (``image_url`` or
  ``image_base64``, see ``shipyard.stream.images``): ``images`` fetches and decodes them
  before the batch is scored, refusing the messages without a usable one; results name the
  ``top_k`` classes too. A table model's batches never go there.
- **Hot swap.** The service follows the model's alias; each result names the version
  that scored it.
- **Prediction log.** With a ``PredictionRecorder``, a batch's log records are written
  (``record_durably``) after its results are published and before it is acked. Its
  slot is free once the results are out, so the next batches are scored while the log
  groups several batches into one write; as many batches may wait for it as make twice
  the recorder's ``durable_rows`` (a full group and the next one filling while it is
  written), at least ``in_flight``. When a consume returns less than a full batch (the
  input ran dry, or the broker gives no more until it gets acks) the log is told to write
  what waits soon (``PredictionRecorder.hurry``); the batches one write releases are acked
  in one broker call. While the log's store is unavailable the write is retried with
  back-off, nothing is acked, and the scorer soon takes no input: no record is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidInputError, ShipyardError, UnavailableError
from shipyard.inference.images import ranked_classes
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import Features, Outputs
from shipyard.inference.service import InferenceService
from shipyard.messaging import (
    BackpressureError,
    Broker,
    Delivery,
    QueueSpec,
    publish_patiently,
)
from shipyard.monitoring.log import STREAM
from shipyard.monitoring.metrics import observe_many
from shipyard.monitoring.recorder import PredictionRecorder
from shipyard.stream import metrics
from shipyard.stream.images import ImageBatch, ImageReader
from shipyard.stream.messages import (
    BAD_FEATURES,
    MODEL_ERROR,
    Inputs,
    parse_inputs,
    result_bodies,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

OVERDELIVERED = "overdelivered"
MAX_BACKOFF_S = 2.0
ACK_TRIES = 5


@dataclass(frozen=True)
class _Record:
    """The prediction-log record of a scored part of a batch."""

    model: str
    version: int
    ids: list[str]
    names: list[str]
    features: Features
    outputs: Outputs
    latency_ms: npt.NDArray[np.float32]


@dataclass(frozen=True)
class ScorerConfig:
    """What a scorer consumes, scores with, and where results and refusals go."""

    model: str
    queue: str = "transactions"
    results: str = "results"
    dead_letter: str | None = None
    batch_size: int = 256
    max_wait_ms: float = 20.0
    max_deliveries: int = 5
    results_max_length: int | None = None
    in_flight: int = 2
    worker: str = "0"
    top_k: int = 5
    """Classes an image model's results name, most probable first."""
    stop_grace_s: float = 10.0
    """On stop, how long to keep retrying a broker that is down before leaving the
    in-flight batches unacked (the broker redelivers them)."""

    @property
    def input_spec(self) -> QueueSpec:
        """How the input queue is declared."""
        return QueueSpec(self.queue, self.dead_letter, max_deliveries=self.max_deliveries)

    @property
    def results_spec(self) -> QueueSpec:
        """How the results queue is declared (bounded: backpressure)."""
        return QueueSpec(self.results, max_length=self.results_max_length)


@dataclass
class ScorerStats:
    """What one scorer did since it started."""

    consumed: int = 0
    scored: int = 0
    batches: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)


class Scorer:
    """Consumes the input queue in batches, scores, publishes results, acks."""

    def __init__(
        self,
        broker: Broker,
        service: InferenceService,
        config: ScorerConfig,
        recorder: PredictionRecorder | None = None,
        images: ImageReader | None = None,
    ) -> None:
        self.broker = broker
        self.service = service
        self.config = config
        self.recorder = recorder
        self.images = images or ImageReader()
        """Reads the messages of an image model (default: base64 only, no URL allowed)."""
        self.stats = ScorerStats()
        self._stopping = False
        self._give_up_at: float | None = None
        self._ack_queue: list[tuple[Sequence[Delivery], asyncio.Future[None]]] = []
        self._acker: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        worker = config.worker
        self._consumed = metrics.CONSUMED.labels(config.queue, worker)
        self._batch_size = metrics.BATCH_SIZE.labels(worker)
        self._latency = metrics.LATENCY.labels(worker)
        self._backpressure = metrics.BACKPRESSURE.labels(config.results, worker)

    async def start(self) -> None:
        """Declare the queues (idempotent) and load the model: fail now, not per message
        (an unreachable broker too: a supervisor restarts the worker)."""
        await self.broker.declare(self.config.input_spec)
        await self.broker.declare(self.config.results_spec)
        loaded = await self.service.model(self.config.model)
        logger.info(
            "scoring %s (now %s) from %r into %r",
            self.config.model,
            loaded.info.ref,
            self.config.queue,
            self.config.results,
        )

    def stop(self) -> None:
        """Take no new messages; the batches in flight finish (see ``stop_grace_s``)."""
        self._stopping = True
        self._give_up_at = time.monotonic() + self.config.stop_grace_s

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopping

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None or self.stopping:
            return
        # Not a bad message, not an unreachable broker: a fault of this process. Its unacked
        # messages must go to a healthy worker, and a message that causes it runs into the
        # delivery bound, so stop and let the supervisor start a fresh worker.
        self._failure = task.exception()
        logger.error("a batch failed unexpectedly; stopping", exc_info=self._failure)
        self.stop()

    @property
    def log_slots(self) -> int:
        """Batches that may be scored, published and waiting for the prediction log at
        once: enough to fill a group commit while the previous one is written."""
        if self.recorder is None:
            return self.config.in_flight
        waiting = -(-2 * self.recorder.durable_rows // self.config.batch_size)
        return self.config.in_flight + waiting

    async def run(self) -> ScorerStats:
        """Consume and score until ``stop``; then finish the batches in flight. A batch
        that fails for an unforeseen reason stops the scorer, and ``run`` raises it."""
        slots = asyncio.Semaphore(self.config.in_flight)
        logging_ = asyncio.Semaphore(self.log_slots)
        batches: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            while not self.stopping:
                await slots.acquire()  # a full results queue holds every slot
                await logging_.acquire()  # so does a prediction log that does not write
                deliveries = [] if self.stopping else await self._consume()
                if self.recorder is not None and len(deliveries) < self.config.batch_size:
                    # The input ran dry, or the broker holds back more until it gets acks
                    # (RabbitMQ's prefetch): the acks waiting for the log need no company.
                    self.recorder.hurry()
                if not deliveries:
                    slots.release()
                    logging_.release()
                    continue
                release = _Once(slots.release)
                task = loop.create_task(self.handle(deliveries, published=release))
                batches.add(task)
                task.add_done_callback(batches.discard)
                task.add_done_callback(release)
                task.add_done_callback(lambda _: logging_.release())
                task.add_done_callback(self._batch_done)
        finally:
            results = await asyncio.gather(*batches, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    logger.warning("batch left unacked, to be delivered again: %s", result)
        if self._failure is not None:
            raise self._failure
        return self.stats

    async def _consume(self) -> list[Delivery]:
        config = self.config
        try:
            deliveries = await self.broker.consume(
                config.queue, config.batch_size, config.max_wait_ms
            )
        except UnavailableError as error:
            self._retrying("consume", error)
            await asyncio.sleep(0.5)
            return []
        if deliveries:
            self._consumed.inc(len(deliveries))
            self._batch_size.observe(len(deliveries))
            self.stats.consumed += len(deliveries)
            self.stats.batches += 1
        return deliveries

    # -- one batch ---------------------------------------------------------------------------

    async def handle(
        self, deliveries: Sequence[Delivery], published: Callable[[], None] = lambda: None
    ) -> None:
        """Dead-letter what cannot be scored, score the rest, publish the results, log the
        predictions, ack. ``published`` is called once the results are out."""
        limit = self.config.max_deliveries
        fresh = [d for d in deliveries if d.attempts <= limit]
        for delivery in deliveries:
            if delivery.attempts > limit:
                await self._dead_letter(
                    delivery,
                    OVERDELIVERED,
                    f"delivered {delivery.attempts} times without being scored (bound "
                    f"{limit}): it may crash or stall every worker that takes it",
                )
        if not fresh:
            return
        # Resolved and loaded apart from scoring (a no-op once loaded): a model that cannot
        # be loaded is no fault of these messages, which must not be split and dead-lettered.
        loaded = await self._persist("load model", lambda: self.service.model(self.config.model))
        images = None
        if loaded.layout.image is not None:  # an image model: fetch and decode first
            images = await self.images.read([d.body for d in fresh])
        records: list[_Record] = []
        results, done = await self._score(fresh, records, images)
        if results:
            await self._publish(results)
            confirmed = time.time()
            observe_many(
                self._latency,
                [max(0.0, confirmed - d.published_at) for d in done if d.published_at is not None],
            )
        del results  # not held while the batch waits for the log: a cooler heap
        published()
        if self.recorder is None:
            await self._ack(done)
            return
        if len(records) == 1:  # the usual case: no task for gather to make
            await self._log(records[0])
        else:
            await asyncio.gather(*(self._log(record) for record in records))
        await self._ack_together(done)

    async def _ack_together(self, deliveries: Sequence[Delivery]) -> None:
        """Ack along with the other batches one log write released: one broker call for
        all of them instead of a burst of one per batch."""
        if not deliveries:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_queue.append((deliveries, done))
        if self._acker is None:
            self._acker = asyncio.get_running_loop().create_task(self._ack_queued())
        await done

    async def _ack_queued(self) -> None:
        taken: list[tuple[Sequence[Delivery], asyncio.Future[None]]] = []
        try:
            while self._ack_queue:
                await asyncio.sleep(0)  # the batches released with this one join it
                taken, self._ack_queue = self._ack_queue, []
                await self._ack([d for deliveries, _ in taken for d in deliveries])
                for _, future in taken:
                    future.set_result(None)
                taken = []
        except BaseException as error:  # cancelled on shutdown: the waiters are too
            for _, future in taken + self._ack_queue:
                if not future.done():
                    future.set_exception(error)
            self._ack_queue = []
            raise
        finally:
            self._acker = None

    async def _log(self, record: _Record) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        await self._persist(
            "log predictions",
            lambda: recorder.record_durably(
                record.model,
                record.version,
                STREAM,
                record.ids,
                record.names,
                record.features,
                record.outputs,
                record.latency_ms,
            ),
        )
        # Logged, so the model's version in shadow (if any) may score the same rows.
        self.service.shadow(record.model, record.version, record.ids, record.names, record.features)

    async def _score(
        self, deliveries: list[Delivery], records: list[_Record], images: ImageBatch | None = None
    ) -> tuple[list[bytes], list[Delivery]]:
        """Result bodies and the deliveries they answer. The bodies are parsed and checked for
        the version that scores them; refused messages, and rows the model fails on (the
        batch is split to find them), are dead-lettered."""
        bodies = [d.body for d in deliveries]
        decode: Callable[[FeatureLayout], Inputs] = (
            (lambda layout: parse_inputs(bodies, layout)) if images is None else images.inputs
        )
        try:
            inference = await self._persist(
                "score", lambda: self.service.infer(self.config.model, decode)
            )
        except InvalidInputError as error:  # rows the model refuses: find which
            return await self._score_each(deliveries, error, records, images)
        except ShipyardError:
            raise  # not about these rows: the worker stops, the broker redelivers them
        except Exception as error:  # the model's own failure: find the rows it fails on
            return await self._score_each(deliveries, error, records, images)
        inputs = inference.decoded
        for refusal in inputs.refused:
            await self._dead_letter(deliveries[refusal.position], refusal.kind, refusal.reason)
        if not inputs.kept:
            return [], []
        scored = [deliveries[i] for i in inputs.kept]
        if self.recorder is not None:
            # None (a broker that does not say) becomes NaN.
            published = np.array([d.published_at for d in scored], dtype=np.float64)
            records.append(
                _Record(
                    inference.model,
                    inference.version,
                    inputs.ids,
                    inference.layout.names,
                    inputs.features,
                    inference.outputs,
                    ((time.time() - published) * 1000).astype(np.float32),
                )
            )
        top_k = None
        if images is not None:
            top_k = ranked_classes(inference.outputs, inference.classes, self.config.top_k)
        return self._results(
            scored, inputs.ids, inference.model, inference.version, inference.outputs, top_k
        )

    async def _score_each(
        self,
        deliveries: list[Delivery],
        error: Exception,
        records: list[_Record],
        images: ImageBatch | None,
    ) -> tuple[list[bytes], list[Delivery]]:
        if len(deliveries) == 1:
            kind = BAD_FEATURES if isinstance(error, InvalidInputError) else MODEL_ERROR
            await self._dead_letter(deliveries[0], kind, f"the model failed on it: {error}")
            return [], []
        logger.info("batch failed (%s); scoring its messages one by one", error)
        results: list[bytes] = []
        done: list[Delivery] = []
        for position, delivery in enumerate(deliveries):
            one = images.take(position) if images is not None else None
            more, answered = await self._score([delivery], records, one)
            results += more
            done += answered
        return results, done

    def _results(
        self,
        deliveries: list[Delivery],
        ids: list[str],
        model: str,
        version: int,
        outputs: Outputs,
        top_k: list[list[dict[str, Any]]] | None = None,
    ) -> tuple[list[bytes], list[Delivery]]:
        bodies = result_bodies(
            ids,
            model,
            version,
            outputs,
            [d.published_at for d in deliveries],
            [d.attempts for d in deliveries],
            self.config.worker,
            time.time(),
            top_k,
        )
        self.stats.scored += len(bodies)
        self.stats.versions[version] += len(bodies)
        metrics.SCORED.labels(model, str(version), self.config.worker).inc(len(bodies))
        return bodies, deliveries

    async def _publish(self, bodies: list[bytes]) -> None:
        await publish_patiently(
            self.broker,
            self.config.results,
            bodies,
            give_up=lambda: self._give_up_at is not None and time.monotonic() > self._give_up_at,
            waiting=self._publish_waited,
        )

    def _publish_waited(self, error: ShipyardError) -> None:
        if isinstance(error, BackpressureError):
            self._backpressure.inc()
        else:
            self._retrying("publish", error)

    async def _ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        for attempt in range(ACK_TRIES):
            try:
                await self.broker.ack(self.config.queue, deliveries)
                return
            except UnavailableError as error:
                self._retrying("ack", error)
                await asyncio.sleep(min(0.1 * 2**attempt, MAX_BACKOFF_S))
        logger.warning(
            "could not ack %d messages; the broker will deliver them again", len(deliveries)
        )

    async def _dead_letter(self, delivery: Delivery, kind: str, reason: str) -> None:
        await self._persist(
            "dead-letter", lambda: self.broker.reject(self.config.queue, delivery, reason)
        )
        self.stats.dead_lettered[kind] += 1
        metrics.DEAD_LETTERED.labels(self.config.queue, kind, self.config.worker).inc()

    # -- retrying ----------------------------------------------------------------------------

    async def _persist(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it succeeds, backing off while a backend is unreachable."""
        delay = 0.05
        while True:
            try:
                return await call()
            except ShipyardError as error:
                if not error.retryable:
                    raise
                self._retrying(operation, error)
                self._check_give_up(error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _retrying(self, operation: str, error: Exception) -> None:
        metrics.BROKER_RETRIES.labels(operation, self.config.worker).inc()
        logger.warning("%s failed (%s); retrying", operation, error)

    def _check_give_up(self, error: ShipyardError) -> None:
        if self._give_up_at is not None and time.monotonic() > self._give_up_at:
            raise error


class _Once:
    """Calls ``action`` the first time it is called, never again."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def __call__(self, *_: object) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()

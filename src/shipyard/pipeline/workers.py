"""Stage workers: broker consumers that run the stages of submitted runs, one event at a time.

A worker consumes the queues of its stages (``pipeline.ingest`` … ``pipeline.promote``;
several workers on a queue share its events). For each event it takes the stage in the
registry database (``Runs.claim_stage``), restores the stage's inputs from the artifact
store (``handoff.restore``), runs the same stage class the in-process ``Runner`` runs,
keeps its outputs (``handoff.keep``), records the stage ``succeeded`` with its worker,
timing and outputs, publishes the next stage's event, and only then acks. The last stage
finishes the run; a stage that raises fails the run with the reason.

- **Going on.** When the worker runs the next stage too, the transaction that records a
  stage also claims the next (``Runs.end_stage(claim_next=…)``) and the worker runs it at
  once, saving a claim and a trip through the broker per stage. The next stage's event is
  published all the same: it is what another worker takes the stage over from if this one
  dies; whoever it reaches finds the stage held (and holds the event back until the lease
  would lapse, in the background) or done (and acks it).
- **At least once, idempotent.** An event whose stage already succeeded is acked without
  running it again, after publishing the next stage's event if that stage never started
  (the worker died between the two). Register reuses the version an earlier attempt of the
  run registered; promote does not move an alias that already points at the version.
- **Leases.** While a stage runs its worker renews a lease on it; an event redelivered
  meanwhile (the stage outlasted the broker's redelivery delay) finds it ``busy`` and is
  put back as a fresh message once the lease would lapse (at least ``defer_s``, at most
  ``lease_s`` later). A worker killed mid-stage lets its lease expire, and the event's
  redelivery takes the stage over (one attempt more).
- **Poison and strays.** An event delivered more than ``max_deliveries`` times (it killed
  every worker that took it) is dead-lettered with the reason and its run failed; so, at
  once, is an event that does not parse or names a run the registry does not have.
- **Transient errors.** A database that is unreachable releases the stage and puts the
  event back; a broker that is unreachable leaves it unacked: the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from shipyard.errors import (
    AliasNotFoundError,
    InvalidInputError,
    LeaseLostError,
    NotFoundError,
    ShipyardError,
)
from shipyard.messaging import Broker, Delivery, publish_patiently
from shipyard.pipeline import handoff
from shipyard.pipeline.ensemble import ClusterOptions
from shipyard.pipeline.events import STAGE_NAMES, StageEvent, publish_event, stage_queue
from shipyard.pipeline.spec import Spec, parse_spec
from shipyard.pipeline.stages import STAGES, Promotion, RunContext, Stage
from shipyard.registry import ModelRef, Registry
from shipyard.registry.records import StageClaim

logger = logging.getLogger(__name__)

STAGE_CLASSES: dict[str, type[Stage]] = {stage.name: stage for stage in STAGES}
MAX_BACKOFF_S = 2.0
SPECS_KEPT = 16


def worker_identity(name: str | None = None) -> str:
    """How a worker is recorded on the stages it runs: ``host:pid`` (and its name)."""
    identity = f"{socket.gethostname()}:{os.getpid()}"
    return f"{identity} {name}" if name else identity


@dataclass(frozen=True)
class WorkerConfig:
    """What a stage worker consumes and how it holds and gives up stages."""

    stages: tuple[str, ...] = STAGE_NAMES
    prefix: str = "pipeline"
    worker: str = field(default_factory=worker_identity)
    lease_s: float = 30.0
    max_deliveries: int = 5
    defer_s: float = 1.0
    poll_ms: float = 1000.0
    cluster: ClusterOptions = field(default_factory=ClusterOptions)

    def __post_init__(self) -> None:
        unknown = [stage for stage in self.stages if stage not in STAGE_NAMES]
        if unknown or not self.stages:
            raise InvalidInputError(
                f"unknown stages {', '.join(unknown) or '(none given)'}; choose among "
                f"{','.join(STAGE_NAMES)}"
            )


@dataclass
class WorkerStats:
    """What a worker did since it started."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    dead_lettered: int = 0


class StageWorker:
    """Consumes stage events from ``broker`` and runs them against ``registry``."""

    def __init__(self, broker: Broker, registry: Registry, config: WorkerConfig) -> None:
        self.broker = broker
        self.registry = registry
        self.config = config
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._slot = asyncio.Lock()  # one stage at a time: a stage uses a core
        # Every stage runs on this one thread: OpenMP (scikit-learn's trees) keeps a team of
        # threads per calling thread, spinning a while after each parallel region, so stages
        # on the default pool's changing threads left idle teams competing with the running
        # one (a 1 s fit took 3 s).
        self._stage_thread = ThreadPoolExecutor(1, thread_name_prefix="stage")
        self._deferring: set[asyncio.Task[None]] = set()  # events waiting to be put back
        # Specs by run id and by (text digest, data file), used on the stage thread only.
        self._specs: OrderedDict[Any, Spec] = OrderedDict()
        self._parsed: OrderedDict[Any, Spec] = OrderedDict()

    def stop(self) -> None:
        """Finish the stage in hand, then return from ``run``."""
        self._stopping.set()

    async def run(self) -> WorkerStats:
        """Declare the queues and consume every stage's queue until ``stop``."""
        for stage in STAGE_NAMES:  # the next stage's too: this worker publishes to it
            await self.broker.declare(stage_queue(self.config.prefix, stage))
        tasks = [asyncio.create_task(self._consume(stage)) for stage in self.config.stages]
        try:
            await self._stopping.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in list(self._deferring):  # unacked, their events come again
                task.cancel()
            await asyncio.gather(*self._deferring, return_exceptions=True)
            self._stage_thread.shutdown(wait=False)
        return self.stats

    async def _consume(self, stage: str) -> None:
        queue = stage_queue(self.config.prefix, stage).name
        delay = 0.05
        while not self._stopping.is_set():
            try:
                deliveries = await self.broker.consume(queue, 1, self.config.poll_ms)
            except ShipyardError as error:
                logger.warning("cannot consume %s: %s; retrying", queue, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            delay = 0.05
            for delivery in deliveries:
                async with self._slot:
                    await self.handle(stage, queue, delivery)

    async def handle(self, stage: str, queue: str, delivery: Delivery) -> None:
        """Run (or skip, defer, dead-letter) one delivered stage event."""
        if delivery.attempts > self.config.max_deliveries:
            reason = (
                f"delivered {delivery.attempts} times, more than {self.config.max_deliveries} "
                "(SHIPYARD_STAGE_MAX_DELIVERIES): every worker that took it died before "
                "finishing its stage; see the workers' logs"
            )
            await self._fail_poison(stage, delivery, reason)
            await self._dead_letter(queue, delivery, reason)
            return
        try:
            event = StageEvent.parse(delivery.body, stage)
        except InvalidInputError as error:
            await self._dead_letter(queue, delivery, str(error))
            return
        runs = self.registry.runs
        worker = self.config.worker
        try:
            claim = await asyncio.to_thread(
                runs.claim_stage, event.run, stage, worker, self.config.lease_s
            )
        except NotFoundError:
            reason = (
                f"run {event.run} is not in this registry: submit runs to workers that share "
                "its database (SHIPYARD_DATABASE_URL), or remove the stray event"
            )
            await self._dead_letter(queue, delivery, reason)
            return
        except ShipyardError as error:
            if not error.retryable:
                raise
            logger.warning("run %s %s: %s; putting the event back", event.run, stage, error)
            await self._defer(queue, delivery)
            return
        if claim.outcome == "finished":
            self.stats.skipped += 1
            await self._ack(queue, delivery)
            return
        if claim.outcome == "busy":
            logger.info("run %s %s is held by %s; deferring", event.run, stage, claim.worker)
            await self._defer(queue, delivery, self._until_lapse(claim))
            return
        if claim.outcome == "done":
            self.stats.skipped += 1
            await self._after(event, claim.outputs or {}, republish=False)
            await self._ack(queue, delivery)
            return
        assert claim.stage_id is not None
        await self._execute(event, claim.stage_id, claim.attempts, queue, delivery)

    async def _execute(
        self, event: StageEvent, stage_id: int, attempt: int, queue: str, delivery: Delivery
    ) -> None:
        """Run a claimed stage, then each following stage this worker runs too: the next
        stage's claim is taken in the transaction that records this one's end, so the run
        goes on here at once. Its event is published all the same, as the record another
        worker takes the stage over from should this one die (whoever it reaches finds the
        stage held, then done); only ``delivery`` is acked."""
        step: tuple[StageEvent, int, int] | None = (event, stage_id, attempt)
        held: Delivery | None = delivery
        while step is not None:
            step = await self._step(*step, queue, held)
            held = None

    async def _step(
        self,
        event: StageEvent,
        stage_id: int,
        attempt: int,
        queue: str,
        delivery: Delivery | None,
    ) -> tuple[StageEvent, int, int] | None:
        """Run one claimed stage and record it; the next stage's event and claim if this
        worker goes on with it."""
        runs, worker = self.registry.runs, self.config.worker
        renewing = asyncio.create_task(self._renew(stage_id))
        start = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            outputs, dataset = await loop.run_in_executor(
                self._stage_thread, self._run_stage, event, attempt
            )
        except ShipyardError as error:
            if not error.retryable:
                await self._fail(event, stage_id, time.perf_counter() - start, error)
                await self._ack(queue, delivery)
                return None
            logger.warning("run %s %s: %s; putting the event back", event.run, event.stage, error)
            with contextlib.suppress(ShipyardError):
                await asyncio.to_thread(runs.release_stage, stage_id, worker)
            if delivery is not None:  # else its published event is already on the queue
                await self._defer(queue, delivery)
            return None
        except Exception as error:
            await self._fail(event, stage_id, time.perf_counter() - start, error)
            await self._ack(queue, delivery)
            return None
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        duration = time.perf_counter() - start
        following = event.next(outputs)
        go_on = (
            following is not None
            and following.stage in self.config.stages
            and not self._stopping.is_set()
        )
        try:
            claim = await asyncio.to_thread(
                partial(
                    runs.end_stage,
                    outputs=outputs,
                    dataset_sha256=dataset,
                    last=following is None,
                    claim_next=following.stage if go_on and following is not None else None,
                    lease_s=self.config.lease_s,
                ),
                stage_id,
                worker,
                "succeeded",
                duration,
            )
        except LeaseLostError as error:
            logger.warning("run %s %s: %s", event.run, event.stage, error)
            await self._ack(queue, delivery)  # the worker that took it over finishes it
            return None
        self.stats.succeeded += 1
        logger.info("run %s %s succeeded in %.2f s", event.run, event.stage, duration)
        await self._after(event, outputs, republish=True)
        await self._ack(queue, delivery)
        if following is None or claim is None or claim.outcome != "claimed":
            return None
        assert claim.stage_id is not None
        return following, claim.stage_id, claim.attempts

    def _run_stage(self, event: StageEvent, attempt: int) -> tuple[dict[str, str], str | None]:
        """Restore the stage's inputs, run it, keep its outputs (in a worker thread); the
        outputs, and the digest of the data the run reads once ingest has it."""
        registry = self.registry
        spec = self._spec(event.run)
        ctx = RunContext(spec=spec, registry=registry, run_id=event.run)
        ctx.cluster = self.config.cluster
        folder = handoff.restore(ctx, event.stage, event.inputs, registry.store)
        try:
            # Only a later attempt can find what an earlier one did.
            if attempt == 1 or not self._done_before(ctx, event.stage):
                STAGE_CLASSES[event.stage]().run(ctx)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        dataset = ctx.dataset_sha256 if event.stage == "ingest" else None
        return handoff.keep(ctx, event.stage, event.inputs, registry.store), dataset

    def _spec(self, run_id: str) -> Spec:
        """The run's spec (with the data file it was given), read once per run and parsed
        once per text and data file: parsing costs more than a stage's bookkeeping, a run's
        spec never changes, and a parsed ``Spec`` is immutable, so runs of one spec share it."""
        spec = self._specs.get(run_id)
        if spec is not None:
            return spec
        text, params = self.registry.runs.spec_and_params(run_id)
        source = params.get("data")
        path = source.get("path") if isinstance(source, dict) else None
        key = (hashlib.sha256(text.encode()).hexdigest(), path if isinstance(path, str) else None)
        spec = self._parsed.get(key)
        if spec is None:
            spec = parse_spec(
                text,
                source=f"the spec of run {run_id}",
                data_file=Path(key[1]) if key[1] is not None else None,
            )
        for cache, name in ((self._specs, run_id), (self._parsed, key)):
            cache[name] = spec
            cache.move_to_end(name)
            while len(cache) > SPECS_KEPT:
                cache.popitem(last=False)
        return spec

    @staticmethod
    def _done_before(ctx: RunContext, stage: str) -> bool:
        """Whether an earlier attempt of this stage left its effect in the registry (it died
        before recording the stage): the version it registered, the alias it moved."""
        registry = ctx.registry
        if stage == "register":
            version = registry.versions_of_runs([ctx.run_id]).get(ctx.run_id)
            if version is not None:
                ctx.version = version
                return True
        if stage == "promote" and ctx.version is not None:
            alias = ctx.spec.promotion.alias
            try:
                current = registry.get_version(ModelRef(ctx.version.name, None, alias))
            except AliasNotFoundError:
                return False
            if current.version == ctx.version.version:
                reason = "promoted by an earlier attempt of this stage"
                ctx.promotion = Promotion(True, alias, reason)
                return True
        return False

    async def _after(self, event: StageEvent, outputs: dict[str, str], *, republish: bool) -> None:
        """Publish the next stage's event, or finish the run after the last stage. A
        redelivered event (``republish`` false) publishes it only if that stage never
        started: its first publication was lost; and finishes the run if the last stage's
        record did not (the worker died first)."""
        following = event.next(outputs)
        runs = self.registry.runs
        if following is None:
            if republish:
                return  # the last stage's end_stage marked the run succeeded
            run = await asyncio.to_thread(runs.get, event.run)
            if run.status not in ("succeeded", "failed"):
                await asyncio.to_thread(runs.finish, event.run, "succeeded")
            return
        if not republish:
            run = await asyncio.to_thread(runs.get, event.run)
            if any(stage.name == following.stage for stage in run.stages):
                return
        await publish_event(self.broker, self.config.prefix, following, declare=False)

    async def _fail(
        self, event: StageEvent, stage_id: int, duration: float, error: BaseException
    ) -> None:
        """Record the stage failed and the run failed with the reason."""
        self.stats.failed += 1
        message = f"{type(error).__name__}: {error}"
        logger.error("run %s %s failed: %s", event.run, event.stage, message)
        runs = self.registry.runs
        try:
            await asyncio.to_thread(
                runs.end_stage, stage_id, self.config.worker, "failed", duration, error=message
            )
        except LeaseLostError:
            return  # another worker runs it now; its outcome counts
        await asyncio.to_thread(runs.finish, event.run, "failed", f"{event.stage}: {message}")

    async def _fail_poison(self, stage: str, delivery: Delivery, reason: str) -> None:
        """Fail the run of an event that kept killing workers (if it names one)."""
        try:
            event = StageEvent.parse(delivery.body, stage)
            run = await asyncio.to_thread(self.registry.runs.get, event.run)
        except ShipyardError:
            return
        if run.status not in ("succeeded", "failed"):
            message = f"{stage}: its event was dead-lettered: {reason}"
            await asyncio.to_thread(self.registry.runs.finish, event.run, "failed", message)

    async def _dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        self.stats.dead_lettered += 1
        logger.error("dead-lettering an event of %s: %s", queue, reason)
        await self.broker.reject(queue, delivery, reason)

    def _until_lapse(self, claim: StageClaim) -> float:
        """How long to hold back an event whose stage a live worker holds: until its lease
        would lapse (a worker that goes on with a run's stages holds each next one while its
        event is out; nothing can take it before), at least ``defer_s``, at most a lease of
        this worker's."""
        expires = claim.lease_expires_at
        if expires is None:
            return self.config.defer_s
        remaining = (expires - datetime.now(UTC)).total_seconds()
        return max(self.config.defer_s, min(remaining, self.config.lease_s))

    async def _defer(self, queue: str, delivery: Delivery, wait_s: float | None = None) -> None:
        """Put the event back as a fresh message after ``wait_s`` (default ``defer_s``): a
        broker that keeps a live consumer's unacked message, as RabbitMQ does, would never
        hand it out again. In the background: the worker takes other events meanwhile."""
        self.stats.deferred += 1
        wait = self.config.defer_s if wait_s is None else wait_s
        task = asyncio.create_task(self._put_back(queue, delivery, wait))
        self._deferring.add(task)
        task.add_done_callback(self._deferring.discard)

    async def _put_back(self, queue: str, delivery: Delivery, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        tries = iter(range(20))
        try:
            await publish_patiently(
                self.broker, queue, [delivery.body], give_up=lambda: next(tries, None) is None
            )
        except ShipyardError as error:
            # Unacked, the broker hands it out again after SHIPYARD_STAGE_REDELIVERY_MS.
            logger.warning("cannot put an event of %s back (%s); it comes again", queue, error)
            return
        await self._ack(queue, delivery)

    async def _ack(self, queue: str, delivery: Delivery | None) -> None:
        if delivery is None:
            return
        try:
            await self.broker.ack(queue, [delivery])
        except ShipyardError as error:
            # Done already: a redelivery finds the stage done and is only acked.
            logger.warning("cannot ack an event of %s (%s); it may come again", queue, error)

    async def _renew(self, stage_id: int) -> None:
        """Renew the stage's lease every third of it while it runs."""
        runs, config = self.registry.runs, self.config
        while True:
            await asyncio.sleep(config.lease_s / 3)
            try:
                held = await asyncio.to_thread(
                    runs.renew_stage, stage_id, config.worker, config.lease_s
                )
            except ShipyardError as error:
                logger.warning("cannot renew the lease of stage %d: %s", stage_id, error)
                continue
            if not held:
                logger.warning("lost the lease of stage %d to another worker", stage_id)
                return


async def serve(
    broker: Broker,
    registry: Registry,
    config: WorkerConfig,
    *,
    ready: Callable[[], None] | None = None,
) -> WorkerStats:
    """Run one stage worker until SIGTERM or SIGINT; closes the broker after."""
    worker = StageWorker(broker, registry, config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        if ready is not None:
            loop.call_soon(ready)
        stats = await worker.run()
        logger.info(
            "stopped: %d stages succeeded, %d failed, %d skipped, %d dead-lettered",
            stats.succeeded,
            stats.failed,
            stats.skipped,
            stats.dead_lettered,
        )
        return stats
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await broker.close()

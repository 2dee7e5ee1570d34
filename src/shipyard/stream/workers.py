"""Scorers as processes: one worker's life (``run_worker``) and N supervised workers on one
machine (``WorkerPool``). Under ``mpiexec -n N`` each rank is simply one worker: the broker
shares the work between competing consumers, so ranks never talk to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import uvloop
from threadpoolctl import threadpool_limits

from shipyard.children import Child, stop_all
from shipyard.errors import ConfigurationError, ShipyardError
from shipyard.inference.runtime import ordinary_runtime, serving_runtime
from shipyard.inference.service import InferenceService, ServiceHooks
from shipyard.messaging import Broker, open_broker
from shipyard.messaging.backends import CLIENT_LOGGERS
from shipyard.monitoring.log import STREAM, open_prediction_log
from shipyard.monitoring.recorder import PredictionRecorder
from shipyard.registry import Registry
from shipyard.settings import Settings
from shipyard.stream import metrics
from shipyard.stream.images import ImageReader
from shipyard.stream.scorer import Scorer, ScorerConfig, ScorerStats

logger = logging.getLogger(__name__)

#: What the math libraries (OpenMP, OpenBLAS, MKL) read their thread count from when they load.
MATH_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

BACKLOG_EVERY_S = 5.0
PROGRESS_EVERY_S = 10.0


def configure_logging(worker: str) -> None:
    """One line per event on stderr, naming the worker (its index or MPI rank); leaves a
    logging set-up the process already has alone."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker={worker} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run_worker(
    settings: Settings, config: ScorerConfig, broker_url: str, *, redelivery_ms: float
) -> ScorerStats:
    """Score until SIGTERM or SIGINT, then finish the batches in flight and return."""
    configure_logging(config.worker)
    with math_threads(settings.math_threads):
        broker = open_broker(broker_url, redelivery_ms=redelivery_ms)
        return uvloop.run(serve(settings, config, broker))


@contextlib.contextmanager
def math_threads(count: int) -> Iterator[None]:
    """At most ``count`` threads per math library (``Settings.math_threads``, default 1): each
    worker has one core's worth of work, and a thread per core in every worker collapsed
    throughput 8x. threadpoolctl limits the libraries already loaded (numpy's BLAS); the
    variables reach those a model loads later (scikit-learn's OpenMP, imported with a skops
    model). ``OMP_NUM_THREADS`` is the setting's default, so a user's value is kept; a user's
    ``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS`` is left in place for libraries loaded
    later, while those already loaded are held to ``count`` too."""
    os.environ["OMP_NUM_THREADS"] = str(count)
    for name in MATH_THREAD_VARIABLES:
        os.environ.setdefault(name, str(count))
    with threadpool_limits(limits=count):
        yield


async def serve(settings: Settings, config: ScorerConfig, broker: Broker) -> ScorerStats:
    """Run one scorer over ``broker`` until a signal stops it; close everything after."""
    worker = config.worker
    registry = Registry.open(settings)
    service = InferenceService(
        registry,
        max_batch_size=config.batch_size,
        max_batch_delay_ms=0,  # batches come whole from the broker
        predict_in_thread=True,
        poll_seconds=settings.swap_poll_seconds,
        hooks=ServiceHooks(
            swapped=lambda route, old, new: _swapped(worker, route, old, new),
            shadow_dropped=lambda name, rows: metrics.SHADOW_DROPPED.labels(name, worker).inc(rows),
        ),
    )
    log = open_prediction_log(settings)
    recorder = None
    if log is not None:
        recorder = PredictionRecorder(
            log,
            flush_ms=settings.prediction_log_flush_ms,
            on_written=lambda model, rows: metrics.LOGGED.labels(model, worker).inc(rows),
        )
    if recorder is not None:
        service.hooks.shadowed = recorder.scored_logger(STREAM)
    else:
        service.shadow_alias = None  # nothing would keep what a shadow scores
    images = ImageReader.from_settings(settings)
    scorer = Scorer(broker, service, config, recorder, images)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, scorer.stop)
    watchers: list[asyncio.Task[None]] = []
    try:
        await service.start()
        await scorer.start()
        # With the log on, waiting messages reach the oldest generation. Batches of hundreds
        # of rows: Python's GIL switch interval (throughput first).
        serving_runtime(switch_interval_s=None)
        _show_client_warnings()
        watchers = [
            loop.create_task(_watch_backlog(scorer)),
            loop.create_task(_report_progress(scorer)),
        ]
        stats = await scorer.run()
        logger.info(
            "stopped: consumed %d, scored %d, dead-lettered %d",
            stats.consumed,
            stats.scored,
            sum(stats.dead_lettered.values()),
        )
        return stats
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        ordinary_runtime()  # a process that goes on (a test) collects them again
        await service.close()
        await images.close()
        if recorder is not None:
            recorder.close()  # every batch waited for its records: nothing is left to lose
            recorder.log.close()
        await broker.close()
        registry.close()


def _show_client_warnings() -> None:
    """The CLI quiets the broker clients' logs so that a broker down at start is one error
    line; a worker that is running shows their warnings (lost connections, reconnects)."""
    for name in CLIENT_LOGGERS:
        client = logging.getLogger(name)
        if client.level > logging.WARNING:
            client.setLevel(logging.WARNING)


def _swapped(worker: str, route: str, old: int, new: int) -> None:
    name = route.split("@")[0]
    metrics.SWAPS.labels(name, worker).inc()
    logger.info("%s moved from v%d to v%d; new batches use v%d", route, old, new, new)


async def _watch_backlog(scorer: Scorer) -> None:
    gauge = metrics.BACKLOG.labels(scorer.config.queue, scorer.config.worker)
    while True:
        try:
            backlog = await scorer.broker.backlog(scorer.config.queue)
        except ShipyardError as error:
            logger.debug("cannot read the backlog: %s", error)
        else:
            if backlog is not None:
                gauge.set(backlog)
        await asyncio.sleep(BACKLOG_EVERY_S)


async def _report_progress(scorer: Scorer) -> None:
    last, then = 0, time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        stats, now = scorer.stats, time.monotonic()
        if stats.consumed != last:
            logger.info(
                "consumed %d, scored %d, dead-lettered %d (%.0f msg/s)",
                stats.consumed,
                stats.scored,
                sum(stats.dead_lettered.values()),
                (stats.consumed - last) / (now - then),
            )
        last, then = stats.consumed, now


# Exit codes of a worker that a restart cannot help: bad configuration or input (2), a
# model or alias that does not exist (3), an artifact that cannot be trusted (5).
PERMANENT_EXITS = frozenset({2, 3, 4, 5})


@dataclass
class _Worker:
    index: int
    child: Child
    started: float


class WorkerPool:
    """N worker processes on this machine; one that dies is started again.

    A worker that exits with a permanent error (configuration, missing model, untrusted
    artifact) stops the pool; one that crashes or is killed is restarted, at most
    ``max_restarts`` times within ``restart_window_s``, with a growing pause.
    """

    def __init__(
        self,
        command: Callable[[int], list[str]],
        workers: int,
        *,
        env: Mapping[str, str] | None = None,
        max_restarts: int = 10,
        restart_window_s: float = 60.0,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.command = command
        self.workers = workers
        self.env = dict(env) if env is not None else None
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.on_exit = on_exit
        self.children: dict[int, _Worker] = {}
        self.restarts: list[float] = []
        self._stopping = False

    def _start(self, index: int) -> None:
        # Output is the pool's own: each log line names its worker.
        child = Child(self.command(index), env=self.env, name=f"worker {index}").start()
        self.children[index] = _Worker(index, child, time.monotonic())
        logger.info("worker %d started (pid %s)", index, child.pid)

    def stop(self, *_: object) -> None:
        """Ask every worker to finish its batches in flight and exit."""
        self._stopping = True

    def run(self) -> int:
        """Start the workers and supervise them until stopped; the pool's exit code."""
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(self.workers):
                self._start(index)
            return self._supervise()
        finally:
            self._terminate()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _supervise(self) -> int:
        while not self._stopping:
            time.sleep(0.2)
            for index, worker in list(self.children.items()):
                code = worker.child.poll()
                if code is None or self._stopping:
                    continue
                if self.on_exit is not None and worker.child.pid is not None:
                    self.on_exit(worker.child.pid)
                if code in PERMANENT_EXITS:
                    logger.error("worker %d exited with %d; stopping the pool", index, code)
                    return code
                if not self._may_restart():
                    logger.error(
                        "workers died %d times within %.0f s; stopping the pool",
                        len(self.restarts),
                        self.restart_window_s,
                    )
                    return 1
                logger.warning("worker %d exited with %s; starting it again", index, code)
                time.sleep(min(0.1 * 2 ** len(self.restarts), 5.0))
                self._start(index)
        return 0

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.restart_window_s]
        self.restarts.append(now)
        return len(self.restarts) <= self.max_restarts

    def _terminate(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every worker (they finish their batches), kill what outlives the timeout."""
        stop_all([worker.child for worker in self.children.values()], timeout_s)


def worker_name(settings: Settings, index: int | None) -> str:
    """How a worker is named in logs and metrics: its MPI rank, or its index in the pool."""
    if index is not None and settings.mpi_rank is not None:
        raise ConfigurationError(
            "--workers N starts its own processes; under mpiexec run one worker per rank "
            "(mpiexec -n N shipyard stream …, without --workers)"
        )
    if settings.mpi_rank is not None:
        return str(settings.mpi_rank)
    return str(index or 0)

"""One measured worker process of ``benchmarks/stream.py``.

``python bench_worker.py CONFIG.json`` runs one of three consumers over a broker URL:

- ``scorer``: what ``shipyard stream`` runs — ``serve`` (``shipyard.stream.workers``) with
  the model's math libraries pinned to one thread and uvloop, as ``run_worker`` does; the
  broker it gets is wrapped in ``TimedBroker`` (below) to time every message.
- ``pass-through``: the same ``serve``, the same ``Scorer`` loop (batch size, in-flight
  depth, ``publish_patiently``, retried acks) and the same wrapped broker, but ``handle``
  publishes a constant result of the real results' size for each delivery and acks,
  without parsing or scoring: the ceiling of the broker and its client library.
- ``seed``: a naive scorer — one message at a time, ``json.loads``, a one-row pandas
  DataFrame into scikit-learn ``predict_proba`` on the original estimator, publish the
  result and await its confirmation, ack — for ``limit`` messages or ``seconds``, with
  the math libraries' threads as they come unless ``seed_threads`` says how many.

Talks to the benchmark over its standard streams: prints ``ready`` once connected, declared
and loaded, waits for a line on stdin before consuming, and at the end prints one
``done {json}`` line with its figures. After each ack it writes the count of messages acked
since the go into its 8-byte slot of the shared ``counters`` file (memory-mapped: no
system call per batch); and each message's service latency (consume returned → ack
returned, seconds) as float64 to ``latencies``. Logs go to stderr. With ``stop_after`` it
stops by itself after that many acks (to profile one worker on its own).
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import pickle
import signal
import struct
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import uvloop
from threadpoolctl import threadpool_limits

from shipyard.messaging import Broker, Delivery, QueueSpec, open_broker
from shipyard.settings import Settings
from shipyard.stream import workers
from shipyard.stream.scorer import Scorer, ScorerConfig

COUNT = struct.Struct("<q")


class TimedBroker:
    """A ``Broker`` that waits for the benchmark's go before the first consume, then times
    each delivery from ``consume`` returning it to ``ack`` returning, and reports acks."""

    def __init__(self, inner: Broker, counters: mmap.mmap, slot: int) -> None:
        self.inner = inner
        self.counters = counters
        self.slot = slot
        self.taken: dict[int, float] = {}
        self.latencies = array("d")
        self.acked = 0
        self.started: float | None = None  # monotonic time of the go
        self.cpu_at_start = 0.0
        self.last_ack = 0.0
        self.cpu_at_last_ack = 0.0
        self.stop_after: int | None = None  # SIGTERM itself after this many (profiling)

    async def _go(self) -> None:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            raise SystemExit("the benchmark went away before the go")
        self.started = time.monotonic()
        self.cpu_at_start = time.process_time()

    async def declare(self, spec: QueueSpec) -> None:
        await self.inner.declare(spec)

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        await self.inner.publish(queue, bodies)

    async def consume(self, queue: str, max_messages: int, timeout_ms: float) -> list[Delivery]:
        if self.started is None:
            await self._go()
        deliveries = await self.inner.consume(queue, max_messages, timeout_ms)
        now = time.monotonic()
        for delivery in deliveries:
            self.taken[id(delivery)] = now
        return deliveries

    def _done(self, deliveries: Sequence[Delivery]) -> None:
        now = time.monotonic()
        for delivery in deliveries:
            taken = self.taken.pop(id(delivery), None)
            if taken is not None:
                self.latencies.append(now - taken)
        self.acked += len(deliveries)
        self.last_ack = now
        self.cpu_at_last_ack = time.process_time()
        COUNT.pack_into(self.counters, self.slot * COUNT.size, self.acked)
        if self.stop_after is not None and self.acked >= self.stop_after:
            signal.raise_signal(signal.SIGTERM)
            self.stop_after = None

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(queue, deliveries)
        self._done(deliveries)

    async def reject(self, queue: str, delivery: Delivery, reason: str) -> None:
        await self.inner.reject(queue, delivery, reason)
        self._done([delivery])

    async def backlog(self, queue: str) -> int | None:
        return await self.inner.backlog(queue)

    async def close(self) -> None:
        await self.inner.close()

    def figures(self) -> dict[str, Any]:
        """What the benchmark reads from the ``done`` line."""
        started = self.started or 0.0
        return {
            "acked": self.acked,
            "started": started,
            "last_ack": self.last_ack,
            "cpu_seconds": max(0.0, self.cpu_at_last_ack - self.cpu_at_start),
        }


class PassThrough(Scorer):
    """The scorer's loop without parsing or scoring: one constant result per delivery."""

    result = b""

    async def handle(
        self, deliveries: Sequence[Delivery], published: Callable[[], None] = lambda: None
    ) -> None:
        """Publish a result per delivery (confirmed, as the scorer does), then ack."""
        self.stats.scored += len(deliveries)
        await self._publish([self.result] * len(deliveries))
        published()
        await self._ack(deliveries)


def scorer_config(config: dict[str, Any]) -> ScorerConfig:
    """The configuration both the scorer and the pass-through run with."""
    return ScorerConfig(
        model=config["model"],
        queue=config["queue"],
        results=config["results"],
        batch_size=config["batch_size"],
        in_flight=config["in_flight"],
        worker=str(config["index"]),
    )


def run_serve(config: dict[str, Any], broker: TimedBroker) -> None:
    """``run_worker``'s body with the timed broker: one math thread, uvloop, ``serve``;
    the prediction log as ``prediction_log`` and ``prediction_log_dir`` say."""
    settings = Settings(
        home=Path(config["home"]),
        prediction_log=config.get("prediction_log", "parquet"),
        prediction_log_dir=config.get("prediction_log_dir"),
    )
    workers.configure_logging(str(config["index"]))
    with workers.math_threads(settings.math_threads):
        uvloop.run(workers.serve(settings, scorer_config(config), broker))


async def seed_loop(config: dict[str, Any], broker: TimedBroker, estimator: Any) -> None:
    """One message at a time: parse, one-row DataFrame, ``predict_proba``, publish, ack."""
    features: list[str] = config["features"]
    queue, results = config["queue"], config["results"]
    await broker.declare(QueueSpec(queue))
    await broker.declare(QueueSpec(results))
    warm = pd.DataFrame([dict.fromkeys(features, 0.0)])[features]
    estimator.predict_proba(warm)  # first-call costs are not the scorer's
    limit, seconds = config["limit"], config["seconds"]
    deadline: float | None = None
    try:
        while broker.acked < limit and (deadline is None or time.monotonic() < deadline):
            taken = await broker.consume(queue, 1, 1000)
            if deadline is None:
                deadline = time.monotonic() + seconds
            for delivery in taken:
                record = json.loads(delivery.body)
                row = pd.DataFrame([record])[features]
                score = float(estimator.predict_proba(row)[0, 1])
                result = {"id": record["id"], "score": score, "label": int(score >= 0.5)}
                await broker.publish(results, [json.dumps(result).encode()])
                await broker.ack(queue, [delivery])
    finally:
        await broker.close()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    with Path(config["counters"]).open("r+b") as file:
        counters = mmap.mmap(file.fileno(), 0)
    broker = TimedBroker(open_broker(config["url"]), counters, config["index"])
    broker.stop_after = config.get("stop_after")
    mode = config["mode"]
    if mode == "seed":
        # Loaded (scikit-learn imported) first: a limit only applies to libraries loaded.
        estimator = pickle.loads(Path(config["estimator"]).read_bytes())
        # A naive scorer leaves the math libraries' threads as they come (``None``).
        with threadpool_limits(limits=config["seed_threads"]):
            uvloop.run(seed_loop(config, broker, estimator))
    else:
        if mode == "pass-through":
            PassThrough.result = config["result"].encode()
            workers.Scorer = PassThrough  # serve() builds the scorer of this name
        run_serve(config, broker)
    Path(config["latencies"]).write_bytes(broker.latencies.tobytes())
    sys.stdout.write("done " + orjson.dumps(broker.figures()).decode() + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: nothing is left to flush


if __name__ == "__main__":
    main()

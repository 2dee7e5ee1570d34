"""Stream scoring throughput and latency per broker, against a pass-through ceiling and a naive
scorer.

Trains and registers the fraud model as examples/fraud/pipeline.yaml does (as
``benchmarks/serve.py`` does, which also fits the same scikit-learn estimator for the naive
scorer), encodes ``--messages`` generated transactions with ``encode_rows``, and for each
backend (RabbitMQ with aio-pika and aiormq, NATS JetStream with nats-py, Redis Streams with
redis-py and hiredis)
and each worker count in ``--workers`` runs, on fresh queues:

- the pass-through (the ceiling): the scorer's own loop — ``serve``, ``Scorer.run``, same
  batch size and in-flight depth, same broker class — publishing a constant result of the
  real results' size per delivery and acking, with no parsing and no model;
- the scorer: ``serve`` from ``shipyard.stream.workers`` as ``run_worker`` runs it (one
  math thread per worker, uvloop): parse, check, score with ONNX Runtime, publish results
  with confirmation, ack.

Before each run the inputs are published (not timed); the workers connect, declare and
load, then all get the go at once. Throughput is the messages acked over the time from the
go to the last ack (each worker writes its count of acked messages into a memory-mapped
file that this script polls; there is no results reader taking CPU from either side).
Latency is per message service time, from ``consume`` returning it to ``ack`` returning
after its result was confirmed — for a pre-published backlog, publication-to-result time
would be queueing time, not the scorer's. Then a naive scorer (one message at a time:
one-row DataFrame → scikit-learn ``predict_proba`` → publish, await the confirm → ack)
runs on each backend for ``--seed-messages`` or ``--seed-seconds``, whichever comes
first. Every queue the benchmark creates is deleted.

With ``--log-ratio`` it runs only the scorer, with the prediction log off and on (Parquet
under a folder of the run, the default of ``shipyard stream``), alternately on the same
inputs, and prints per backend and worker count both rates, their ratio and the Parquet
files the logging runs wrote per second, then each round's pair with the CPU the rest of
the machine took meanwhile. The other runs log as ``shipyard stream`` does.

    python benchmarks/stream.py [--messages 50000] [--backends rabbitmq,nats,redis]
        [--workers 1,2] [--rounds 1] [--log-ratio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mmap
import os
import selectors
import shutil
import signal
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aio_pika
import nats
import numpy as np
import psutil
import pyarrow.parquet as pq
from nats.js.errors import NotFoundError
from redis.asyncio import Redis
from serve import busy_cpu_seconds, log, train
from yarl import URL

from shipyard.children import Child, stop_all
from shipyard.data import generate_fraud
from shipyard.messaging import open_broker, publish_patiently
from shipyard.messaging.nats import stream_name
from shipyard.messaging.redis import spec_key
from shipyard.stream.messages import encode_rows, result_bodies
from shipyard.stream.scorer import ScorerConfig

HERE = Path(__file__).resolve().parent
WORKER = HERE / "stream" / "bench_worker.py"
URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
}
CLIENTS = {"rabbitmq": "aio-pika/aiormq", "nats": "nats-py", "redis": "redis-py/hiredis"}
MODES = ("pass-through", "scorer")
LOG_MODES = {"scorer, log off": "off", "scorer, log on": "parquet"}
TRANSACTIONS_SEED = 2026  # not the training seed (7)
PUBLISH_CHUNK = 1000
READY_TIMEOUT_S = 120.0
COUNT = struct.Struct("<q")  # a worker's slot in the counters file: messages acked


@dataclass(frozen=True)
class Run:
    """One timed run: what consumed, and what it measured."""

    backend: str
    mode: str
    workers: int
    messages: int
    seconds: float
    p50_ms: float
    p99_ms: float
    worker_cores: float  # CPU seconds of the workers per second of the run
    broker_cores: float  # the same for the broker's server
    other_cores: float  # the same for everything else on the machine (this script, neighbours)
    check: str  # what the queues held afterwards
    log_files: int = 0  # Parquet files of the prediction log the run wrote

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds


@dataclass(frozen=True)
class Setup:
    """What every run needs: the trained home, the inputs and the pass-through's result."""

    home: Path
    tmp: Path
    bodies: list[bytes]
    result: bytes
    estimator: Path
    features: list[str]
    batch_size: int
    in_flight: int
    seed_threads: int | None


# ---------------------------------------------------------------------------- queues


def queue_names(queue: str, results: str) -> list[str]:
    """Every queue a run creates: inputs, results and their dead-letter queues."""
    return [queue, f"{queue}.dead", results, f"{results}.dead"]


async def prepare(url: str, config: ScorerConfig, bodies: Sequence[bytes]) -> None:
    """Declare the queues as the scorer does and publish the inputs, confirmed."""
    broker = open_broker(url)
    try:
        await broker.declare(config.input_spec)
        await broker.declare(config.results_spec)
        for start in range(0, len(bodies), PUBLISH_CHUNK):
            await publish_patiently(broker, config.queue, bodies[start : start + PUBLISH_CHUNK])
    finally:
        await broker.close()


async def counts(url: str, config: ScorerConfig) -> dict[str, int | None]:
    """Messages waiting in the inputs, results and inputs' dead-letter queues."""
    broker = open_broker(url)
    try:
        names = {"inputs": config.queue, "results": config.results, "dead": f"{config.queue}.dead"}
        return {label: await broker.backlog(name) for label, name in names.items()}
    finally:
        await broker.close()


async def delete_queues(backend: str, url: str, names: Sequence[str]) -> None:
    """Delete queues (and streams, consumers, spec hashes); missing ones are fine."""
    if backend == "rabbitmq":
        # Quorum queues are Raft groups on the server: they must not be left behind.
        connection = await aio_pika.connect(url, timeout=10)
        async with connection:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
    elif backend == "nats":
        client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
        try:
            for name in names:
                with contextlib.suppress(NotFoundError):
                    await client.jetstream().delete_stream(stream_name(name))
        finally:
            await client.close()
    elif backend == "redis":
        redis = Redis.from_url(url)
        try:
            await redis.delete(*names, *(spec_key(name) for name in names))
        finally:
            await redis.aclose()


# ---------------------------------------------------------------------------- CPU


def listening_pids(port: int) -> list[int]:
    """Processes with a TCP socket listening on ``port`` (the broker's server)."""
    return sorted(
        {
            connection.pid
            for connection in psutil.net_connections(kind="tcp")
            if connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid is not None
        }
    )


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (their threads included)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


@dataclass(frozen=True)
class Clock:
    """Wall time and CPU time (whole machine, broker) at one instant."""

    wall: float
    busy: float
    broker: float

    @classmethod
    def now(cls, broker: Sequence[int]) -> Clock:
        """Read the clocks."""
        return cls(time.monotonic(), busy_cpu_seconds(), cpu_seconds(broker))


# ---------------------------------------------------------------------------- workers


@dataclass
class Worker:
    """A running worker process and what it reported so far."""

    child: Child
    latencies: Path
    figures: dict[str, Any] | None = None
    buffer: bytes = b""


@dataclass
class Crew:
    """The workers of a run and the memory-mapped file each writes its ack count into."""

    workers: list[Worker]
    counters: mmap.mmap

    def acked(self) -> int:
        """Messages acked since the go, by every worker."""
        return sum(n for (n,) in COUNT.iter_unpack(self.counters))

    def wait_acked(self, expected: int, until: float) -> None:
        """Poll the counters (every 2 ms) until ``expected`` messages are acked."""
        while self.acked() < expected:
            if time.monotonic() > until:
                raise TimeoutError(f"{self.acked():,} of {expected:,} acked in time")
            for worker in self.workers:
                if worker.child.poll() is not None:
                    raise RuntimeError(
                        f"a worker exited with {worker.child.returncode}:\n{worker.child.tail()}"
                    )
            time.sleep(0.002)


def start_worker(
    setup: Setup, url: str, config: dict[str, Any], index: int, counters: Path
) -> Worker:
    """A worker process of ``bench_worker.py``, in its own session (Ctrl-C stays here)."""
    tag = f"{config['queue']}-{index}"
    latencies = setup.tmp / f"{tag}.latencies"
    config = config | {
        "url": url,
        "home": str(setup.home),
        "index": index,
        "counters": str(counters),
        "latencies": str(latencies),
        "batch_size": setup.batch_size,
        "in_flight": setup.in_flight,
    }
    path = setup.tmp / f"{tag}.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    child = Child(
        [sys.executable, str(WORKER), str(path)],
        cwd=setup.tmp,  # no stray .env file gets read
        env=env,
        log=setup.tmp / f"{tag}.log",  # stderr; stdout is the report pipe
        pipes=True,
        new_session=True,
        name=f"worker {index}",
    )
    return Worker(child.start(), latencies)


def read_lines(workers: list[Worker], until: float, enough: Any) -> None:
    """Read the workers' report lines until ``enough()`` or ``until`` (monotonic) passes."""
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            stdout = worker.child.process.stdout
            assert stdout is not None
            os.set_blocking(stdout.fileno(), False)
            selector.register(stdout, selectors.EVENT_READ, worker)
        while not enough():
            remaining = until - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the workers did not report in time")
            for key, _ in selector.select(min(remaining, 1.0)):
                worker = key.data
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    if worker.figures is None:
                        raise RuntimeError(f"a worker exited with {worker.child.wait(60)}")
                    continue
                *lines, worker.buffer = (worker.buffer + chunk).split(b"\n")
                for line in lines:
                    if line.startswith(b"done "):
                        worker.figures = json.loads(line[5:])
                    elif line == b"ready":
                        worker.figures = {"ready": True}


def stop(workers: list[Worker]) -> None:
    """SIGTERM every worker (they finish their batches), SIGKILL what outlives 30 s."""
    stop_all([worker.child for worker in workers], timeout_s=30)


@contextlib.contextmanager
def running(setup: Setup, url: str, config: dict[str, Any], count: int) -> Iterator[Crew]:
    """``count`` workers, yielded once all are ready; stopped (killed if need be) after."""
    path = setup.tmp / f"{config['queue']}.counters"
    path.write_bytes(bytes(COUNT.size * count))
    with path.open("r+b") as file:
        counters = mmap.mmap(file.fileno(), 0)
    crew = Crew([], counters)
    try:
        for index in range(count):
            crew.workers.append(start_worker(setup, url, config, index, path))
        read_lines(
            crew.workers,
            time.monotonic() + READY_TIMEOUT_S,
            lambda: all(w.figures is not None for w in crew.workers),
        )
        for worker in crew.workers:
            worker.figures = None
        yield crew
    finally:
        stop(crew.workers)
        counters.close()


def go(workers: list[Worker], broker: Sequence[int]) -> Clock:
    """Tell every worker to start; the clocks at that go."""
    clock = Clock.now(broker)
    for worker in workers:
        stdin = worker.child.process.stdin
        assert stdin is not None
        stdin.write(b"go\n")
        stdin.flush()
    return clock


def measure(
    setup: Setup,
    backend: str,
    mode: str,
    worker_config: dict[str, Any],
    count: int,
    expected: int | None,
    limit_s: float,
) -> Run:
    """Start ``count`` workers, give the go, wait until ``expected`` messages are acked
    (None: until the workers end by themselves), stop them and read their figures (the
    queues must hold the inputs already)."""
    url = URLS[backend]
    broker = listening_pids(URL(url).port or 0)
    with running(setup, url, worker_config, count) as crew:
        workers = crew.workers
        start = go(workers, broker)
        if expected is not None:
            crew.wait_acked(expected, start.wall + limit_s)
        else:
            read_lines(workers, start.wall + limit_s, lambda: all(w.figures for w in workers))
        end = Clock.now(broker)
        for worker in workers:
            worker.child.send_signal(signal.SIGTERM)
        read_lines(workers, time.monotonic() + 60, lambda: all(w.figures for w in workers))
    figures = [w.figures for w in workers if w.figures is not None]
    seconds = max(f["last_ack"] for f in figures) - start.wall
    latencies = np.concatenate([np.fromfile(w.latencies, dtype=np.float64) for w in workers])
    p50, p99 = (float(v) * 1000 for v in np.percentile(latencies, [50, 99]))
    wall = end.wall - start.wall
    worker_cpu = sum(f["cpu_seconds"] for f in figures)
    broker_cpu = end.broker - start.broker
    other_cpu = max(0.0, end.busy - start.busy - worker_cpu - broker_cpu)
    return Run(
        backend,
        mode,
        count,
        sum(f["acked"] for f in figures),
        seconds,
        p50,
        p99,
        worker_cpu / seconds,
        broker_cpu / wall,
        other_cpu / wall,
        "-",
    )


# ---------------------------------------------------------------------------- runs


def fresh_config(setup: Setup) -> ScorerConfig:
    """The scorer's configuration on queues of their own."""
    tag = uuid.uuid4().hex[:8]
    return ScorerConfig(
        model="fraud",
        queue=f"bench-{tag}-in",
        results=f"bench-{tag}-out",
        batch_size=setup.batch_size,
        in_flight=setup.in_flight,
    )


def run_scoring(setup: Setup, backend: str, mode: str, count: int) -> Run:
    """Publish the inputs to fresh queues, then time ``count`` workers through them (a
    mode of ``LOG_MODES`` is the scorer with the prediction log off or on)."""
    url = URLS[backend]
    config = fresh_config(setup)
    expected = len(setup.bodies)
    log_dir = setup.tmp / f"predictions-{config.queue}"
    try:
        asyncio.run(prepare(url, config, setup.bodies))
        worker_config = {
            "mode": "scorer" if mode in LOG_MODES else mode,
            "model": config.model,
            "queue": config.queue,
            "results": config.results,
            "result": setup.result.decode(),
            "prediction_log": LOG_MODES.get(mode, "parquet"),
            "prediction_log_dir": str(log_dir),
        }
        run = measure(
            setup,
            backend,
            mode,
            worker_config,
            count,
            expected,
            max(120.0, expected / 50),
        )
        left = asyncio.run(counts(url, config))
        check = f"{left['results']:,} results, {left['inputs']} left, {left['dead']} dead"
        files = list(log_dir.rglob("part-*.parquet"))
        if files:
            logged = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            check += f", {logged:,} logged"
        return replace(run, check=check, log_files=len(files))
    finally:
        asyncio.run(delete_queues(backend, url, queue_names(config.queue, config.results)))
        shutil.rmtree(log_dir, ignore_errors=True)


def run_seed(setup: Setup, backend: str, limit: int, seconds: float) -> Run:
    """The naive scorer on fresh queues for ``limit`` messages or ``seconds``."""
    url = URLS[backend]
    config = fresh_config(setup)
    try:
        asyncio.run(prepare(url, config, setup.bodies[: limit + 100]))
        worker_config = {
            "mode": "seed",
            "queue": config.queue,
            "results": config.results,
            "estimator": str(setup.estimator),
            "features": setup.features,
            "limit": limit,
            "seconds": seconds,
            "seed_threads": setup.seed_threads,
        }
        return measure(
            setup,
            backend,
            "seed",
            worker_config,
            1,
            None,
            seconds + 60,
        )
    finally:
        asyncio.run(delete_queues(backend, url, queue_names(config.queue, config.results)))


# ---------------------------------------------------------------------------- report


def print_runs(runs: Sequence[Run]) -> None:
    """Every run: figures, CPU, what the queues held afterwards."""
    print(
        "| backend (client) | consumer | workers | msg/s | p50 | p99 | worker CPU | broker CPU"
        " | others' CPU | queues after |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(
            f"| {r.backend} ({CLIENTS[r.backend]}) | {r.mode} | {r.workers} | {r.rate:,.0f}"
            f" | {r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | {r.worker_cores:.2f}"
            f" | {r.broker_cores:.2f} | {r.other_cores:.2f} | {r.check} |"
        )


def print_ratios(runs: Sequence[Run]) -> None:
    """Scorer against the pass-through ceiling of the same run set, and against the seed."""
    by_key = {(r.backend, r.mode, r.workers): r for r in runs}
    print(
        "| backend | workers | pass-through (ceiling) | scorer | scorer / ceiling"
        " | seed-style | scorer × seed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (backend, mode, workers), scorer in by_key.items():
        if mode != "scorer":
            continue
        ceiling = by_key.get((backend, "pass-through", workers))
        seed = by_key.get((backend, "seed", 1))
        print(
            f"| {backend} | {workers} | {ceiling.rate:,.0f}" if ceiling else f"| {backend} | -",
            end="",
        )
        print(f" | {scorer.rate:,.0f} | ", end="")
        print(f"{scorer.rate / ceiling.rate:.2f}" if ceiling else "-", end="")
        print(f" | {seed.rate:,.0f} | {scorer.rate / seed.rate:.0f}x |" if seed else " | - | - |")


def print_log_ratios(runs: Sequence[Run], rounds: Sequence[tuple[int, Run]]) -> None:
    """The scorer with the prediction log on against off (the fastest of each, and the
    median of the rounds' own pairs), and the log's files per second."""
    by_key = {(r.backend, r.mode, r.workers): r for r in runs}
    pairs: dict[tuple[str, int], list[float]] = {}
    offs = {(n, r.backend, r.workers): r for n, r in rounds if r.mode == "scorer, log off"}
    for number, run in rounds:
        off = offs.get((number, run.backend, run.workers))
        if run.mode == "scorer, log on" and off is not None:
            pairs.setdefault((run.backend, run.workers), []).append(run.rate / off.rate)
    print(
        "| backend | workers | log off msg/s | log on msg/s | on / off | median of rounds' "
        "on / off | Parquet files/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (backend, mode, workers), on in by_key.items():
        off = by_key.get((backend, "scorer, log off", workers))
        if mode != "scorer, log on" or off is None:
            continue
        median = float(np.median(pairs[(backend, workers)]))
        print(
            f"| {backend} | {workers} | {off.rate:,.0f} | {on.rate:,.0f} | "
            f"{on.rate / off.rate:.3f} | {median:.3f} | {on.log_files / on.seconds:.1f} |"
        )


def print_log_rounds(runs: Sequence[tuple[int, Run]]) -> None:
    """Each round's log off / on pair, with what else ran meanwhile: on a shared machine the
    fastest of each alone can pair a quiet run with a busy one."""
    print("| backend | workers | round | log off msg/s | log on msg/s | on / off | others' CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    offs = {(n, r.backend, r.workers): r for n, r in runs if r.mode == "scorer, log off"}
    for number, on in runs:
        off = offs.get((number, on.backend, on.workers))
        if on.mode != "scorer, log on" or off is None:
            continue
        print(
            f"| {on.backend} | {on.workers} | {number} | {off.rate:,.0f} | {on.rate:,.0f} | "
            f"{on.rate / off.rate:.2f} | {off.other_cores:.2f} / {on.other_cores:.2f} |"
        )


def describe(run: Run) -> str:
    """One line of progress."""
    return (
        f"{run.backend:<8} {run.mode:<12} {run.workers} worker(s) {run.rate:>8,.0f} msg/s  p50 "
        f"{run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  CPU: workers {run.worker_cores:.2f}, "
        f"broker {run.broker_cores:.2f}, others {run.other_cores:.2f}  {run.check}"
    )


def fastest(runs: Sequence[Run]) -> list[Run]:
    """The fastest run of each (backend, consumer, workers), in first-seen order."""
    best: dict[tuple[str, str, int], Run] = {}
    for r in runs:
        key = (r.backend, r.mode, r.workers)
        if key not in best or r.rate > best[key].rate:
            best[key] = r
    return list(best.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000, help="inputs per run")
    parser.add_argument("--backends", default="rabbitmq,nats,redis", help="comma-separated")
    parser.add_argument("--workers", default="1,2", help="worker processes, comma-separated")
    parser.add_argument("--modes", default="pass-through,scorer,seed", help="consumers to run")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each; the fastest shown")
    parser.add_argument("--batch-size", type=int, default=ScorerConfig.batch_size)
    parser.add_argument("--in-flight", type=int, default=ScorerConfig.in_flight)
    parser.add_argument("--seed-messages", type=int, default=2_000)
    parser.add_argument("--seed-seconds", type=float, default=20.0)
    parser.add_argument(
        "--seed-threads",
        type=int,
        default=None,
        help="math-library threads of the naive scorer (default: the libraries' own)",
    )
    parser.add_argument("--rows", type=int, default=60_000, help="generated training rows")
    parser.add_argument(
        "--log-ratio",
        action="store_true",
        help="only the scorer, with the prediction log off and on alternately, and the ratio",
    )
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - URLS.keys()
    if unknown:
        sys.exit(f"unknown backend(s) {', '.join(sorted(unknown))}; known: {', '.join(URLS)}")
    counts_of_workers = [int(n) for n in args.workers.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    run_modes: Sequence[str] = [m for m in MODES if m in modes]
    if args.log_ratio:
        modes, run_modes = [], list(LOG_MODES)

    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    numbered: list[tuple[int, Run]] = []
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-stream-") as tmp:
        home = Path(tmp) / "home"
        _, features, estimator, _ = train(home, args.rows)
        frame = generate_fraud(args.messages, seed=TRANSACTIONS_SEED).drop(columns=["Class"])
        ids, bodies = encode_rows(frame)
        scored_at = time.time()
        result = result_bodies(
            [ids[0]],
            "fraud",
            1,
            {"probability": np.array([0.0132], np.float32), "label": np.array([0])},
            [scored_at - 0.004],
            [1],
            "0",
            scored_at,
        )[0]
        sizes = [len(b) for b in bodies]
        log(
            f"{len(bodies):,} inputs of {min(sizes)}–{max(sizes)} bytes (mean "
            f"{np.mean(sizes):.0f}); results of about {len(result)} bytes"
        )
        setup = Setup(
            home,
            Path(tmp),
            bodies,
            result,
            estimator,
            features,
            args.batch_size,
            args.in_flight,
            args.seed_threads,
        )
        for round_number in range(1, args.rounds + 1):
            for backend in backends:
                for count in counts_of_workers:
                    for mode in run_modes:
                        runs.append(run_scoring(setup, backend, mode, count))
                        numbered.append((round_number, runs[-1]))
                        log(f"  round {round_number}/{args.rounds}  {describe(runs[-1])}")
                if "seed" in modes and round_number == 1:
                    runs.append(run_seed(setup, backend, args.seed_messages, args.seed_seconds))
                    log(f"  {describe(runs[-1])} ({runs[-1].messages:,} messages)")

    best = fastest(runs)
    print(
        f"\nfraud model (HistGradientBoostingClassifier, ONNX Runtime); {len(bodies):,} "
        f"pre-published inputs of ~{np.mean(sizes):.0f} bytes per run; batches of "
        f"{args.batch_size}, {args.in_flight} in flight; fastest of {args.rounds} run(s); load "
        f"average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print("msg/s: messages acked / seconds from the go to the last ack. p50/p99: per message,")
    print("consume returned → result confirmed → ack returned. CPU: cores used during the run")
    print("others' CPU is everything but the workers and the broker (this script, neighbours).\n")
    print_runs(best)
    print()
    if args.log_ratio:
        print_log_ratios(best, numbered)
        print()
        print_log_rounds(numbered)
    else:
        print_ratios(best)


if __name__ == "__main__":
    main()

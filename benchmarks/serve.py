"""HTTP serving throughput and latency: Shipyard's routes vs an empty route and a naive server.

Trains and registers the fraud model as examples/fraud/pipeline.yaml does (generated rows),
fits the same scikit-learn estimator for the naive route, then starts one uvicorn process
(the stack of ``shipyard serve``: uvloop, httptools, log level warning, no access log) pinned
to core 1 with ``taskset``, and drives it from core 0 with ``wrk`` — single-row POSTs
rotating through 16 real fraud-table rows, ``--connections`` open connections. Each target is
warmed up, then run ``--rounds`` times for ``--duration`` seconds, round-robin with the
others, and reported by its fastest run (a neighbour only slows runs down). In one run it
prints requests/s, p50, p99, errors and the CPU the server used for:

- the bar: ``POST /empty`` of a bare ``FastAPI()`` app (``serve/plain_app.py``: no
  middleware, no Shipyard import, a constant ``Response``) in its own uvicorn process with
  the same flags, pinned to the same core and idle while the others run;
- ``POST /bench/empty`` on the same app and middleware (the ceiling: no parsing, no model);
- Open Inference Protocol ``/v2/models/fraud/infer`` with JSON tensors;
- the same with the binary tensor extension (JSON header + 120 raw float32 bytes);
- MLflow ``/invocations`` with ``dataframe_split``;
- ``POST /bench/naive``: pydantic model of 30 fields → one-row DataFrame → scikit-learn
  ``predict_proba`` per request (what most FastAPI model servers do);

- OIP JSON through nginx: the shipped ``deploy/nginx/nginx.conf`` (listen and upstream ports
  rewritten, 1 worker process) in front of the same server, nginx pinned to core 0 beside
  wrk, so the server keeps its core as in the direct runs and the ratio to OIP JSON is what
  the extra hop costs (``serve/balancer.py``; needs Debian's nginx);

then OIP JSON again on two unpinned servers, one with 1 and one with ``--workers`` processes,
to show how it scales (wrk stays on core 0, so on 2 cores it competes with the server): the
second at ``--connections`` and again at ``--workers`` times as many (each worker with the
load one had; split N ways, batches are 1/N the size, which costs CPU per request).

    python benchmarks/serve.py [--duration 10] [--rounds 3] [--connections 32] [--workers 2]

``--traffic`` runs only the comparison of the load generators against the empty route: wrk
and ``shipyard traffic``'s engine (``serve/traffic_engine.py``: closed-loop users with zero
think time, ``--connections`` of them), each pinned to core 0, interleaved, against one
server on core 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from shipyard.children import Child, free_port, http_ok
from shipyard.data import get_dataset
from shipyard.examples import example_spec
from shipyard.pipeline import Runner, load_spec
from shipyard.pipeline.estimators import build_estimator
from shipyard.registry import Registry
from shipyard.settings import Settings

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "serve"
SERVER_CORE = "1"
CLIENT_CORE = "0"
SAMPLE_ROWS = 16
NGINX_LABEL = "OIP JSON through nginx"
BAR_LABEL = "empty FastAPI route on uvicorn (the bar)"
WRK_TIMEOUT_S = 2  # wrk counts slower responses as timeout errors


@dataclass(frozen=True)
class Target:
    """One route and the request bodies wrk rotates through."""

    label: str
    path: str
    content_type: str
    bodies: list[bytes]
    header_lengths: list[int] | None = None  # Inference-Header-Content-Length per body


@dataclass(frozen=True)
class Measurement:
    """What wrk reported for one target."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cores: float = 0.0  # CPU seconds of the server's processes per wall second
    client_cores: float = 0.0  # the same for wrk
    proxy_cores: float = 0.0  # the same for nginx, when the requests go through it
    other_cores: float = 0.0  # the same for everything else on the machine (neighbours)

    @property
    def errors(self) -> int:
        """Failed requests of every kind."""
        return self.non_2xx + self.socket_errors


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- model + data


def train(home: Path, rows: int) -> tuple[pd.DataFrame, list[str], Path, dict[str, Any]]:
    """Register fraud@production from generated rows and fit the naive route's estimator.

    Returns sample rows for the requests, the feature names, the pickled estimator's path
    and the registered version's output schema.
    """
    spec, text = load_spec(example_spec("fraud"))
    dataset = get_dataset(spec.data.dataset or "fraud")
    generate = spec.data.generate
    seed = generate.seed if generate is not None else 7
    frame = dataset.generate(rows, seed)
    data = home.parent / "fraud.parquet"
    frame.to_parquet(data)
    log(f"training fraud on {rows:,} generated rows through the pipeline…")
    with Registry.open(Settings(home=home)) as registry:
        result = Runner(registry).run(spec.with_data_file(data), text)
    log(f"registered fraud:{result.version.version} ({result.promotion.reason})")

    features = dataset.schema.feature_names
    target = dataset.schema.target
    assert target is not None
    # The naive server fits the same estimator on the same training split, on a DataFrame
    # (as its requests arrive as one), which is what scikit-learn tutorials do.
    train_rows, test_rows = train_test_split(
        frame,
        test_size=spec.split.test_size,
        random_state=spec.split.random_state,
        stratify=frame[target] if spec.split.stratify else None,
    )
    model = spec.model
    estimator = build_estimator(
        model.type, model.params, scale=model.scale, random_state=spec.split.random_state
    )
    log("fitting the naive route's scikit-learn estimator…")
    with threadpool_limits(1):
        estimator.fit(train_rows[features].astype(np.float32), train_rows[target].to_numpy())
    estimator_path = home.parent / "naive-estimator.pkl"
    estimator_path.write_bytes(pickle.dumps(estimator))

    frauds = test_rows[test_rows[target] == 1].head(SAMPLE_ROWS // 4)
    normal = test_rows[test_rows[target] == 0].head(SAMPLE_ROWS - len(frauds))
    samples = pd.concat([frauds, normal]).sample(frac=1.0, random_state=0)[features]
    return samples, features, estimator_path, result.version.output_schema


def targets(samples: pd.DataFrame, features: list[str], outputs: list[str]) -> list[Target]:
    """The five routes with one single-row body per sample row."""
    rows = [[float(v) for v in row] for row in samples.to_numpy(np.float64)]
    dumps = json.dumps

    def oip(row: list[float]) -> bytes:
        tensor = {"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}
        return dumps({"inputs": [tensor]}).encode()

    binary_bodies, header_lengths = [], []
    for row in rows:
        header = dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, len(row)],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 4 * len(row)},
                    }
                ],
                "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
            }
        ).encode()
        binary_bodies.append(header + np.asarray(row, dtype="<f4").tobytes())
        header_lengths.append(len(header))
    json_type = "application/json"
    return [
        Target(BAR_LABEL, "/empty", json_type, [oip(r) for r in rows]),
        Target("empty route (ceiling)", "/bench/empty", json_type, [oip(r) for r in rows]),
        Target("empty hot route", "/bench/empty-hot", json_type, [oip(r) for r in rows]),
        Target("OIP JSON", "/v2/models/fraud/infer", json_type, [oip(r) for r in rows]),
        Target(
            "OIP binary tensors",
            "/v2/models/fraud/infer",
            "application/octet-stream",
            binary_bodies,
            header_lengths,
        ),
        Target(
            "MLflow /invocations",
            "/invocations",
            json_type,
            [dumps({"dataframe_split": {"columns": features, "data": [r]}}).encode() for r in rows],
        ),
        Target(
            "naive FastAPI + sklearn",
            "/bench/naive",
            json_type,
            [dumps(dict(zip(features, r, strict=True))).encode() for r in rows],
        ),
    ]


# ---------------------------------------------------------------------------- server


@dataclass(frozen=True)
class Server:
    """A running server: where it listens and its process tree (uvicorn and workers)."""

    url: str
    child: Child
    proxy: Child | None = None
    """nginx, when ``url`` is its address in front of ``child``."""


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, everything but idle and iowait)."""
    times = psutil.cpu_times()  # Linux's fields; guest time is already inside user time
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


@contextlib.contextmanager
def server(
    home: Path,
    *,
    workers: int,
    cores: str | None,
    naive_estimator: Path | None,
    prediction_log: str = "parquet",
    plain: bool = False,
) -> Iterator[Server]:
    """A uvicorn process tree serving the benchmark app, yielded once ready.

    ``plain`` serves the bar instead: ``plain_app.py``'s empty FastAPI route, same flags.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        {
            "PYTHONPATH": str(APP_DIR),
            "SHIPYARD_HOME": str(home),
            "SHIPYARD_SERVE_MODELS": json.dumps(["fraud"]),
            "SHIPYARD_PREDICTION_LOG": prediction_log,
            "SHIPYARD_PREDICTION_LOG_DIR": str(home.parent / f"predictions-{port}"),
        }
    )
    if naive_estimator is not None:
        env["BENCH_NAIVE_ESTIMATOR"] = str(naive_estimator)
    if workers > 1:  # as `shipyard serve --workers N` sets it up
        metrics_dir = home.parent / f"metrics-{port}"
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *(["plain_app:app"] if plain else ["bench_app:create_bench_app", "--factory"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if cores is not None:
        command = ["taskset", "-c", cores, *command]
    url = f"http://127.0.0.1:{port}"
    child = Child(
        command,
        cwd=home.parent,  # no stray .env file gets read
        env=env,
        log=home.parent / f"server-{port}.log",
        new_session=True,
        name="the benchmark server",
    )
    ready = "/ready" if plain else "/v2/health/ready"
    with child.start(http_ok(f"{url}{ready}"), timeout_s=60):
        yield Server(url, child)


def check(url: str, target: Target) -> dict[str, Any] | bytes:
    """Send every body once; each must get 200. Returns the first response's content."""
    first: dict[str, Any] | bytes | None = None
    for position, body in enumerate(target.bodies):
        headers = {"content-type": target.content_type}
        if target.header_lengths is not None:
            headers["inference-header-content-length"] = str(target.header_lengths[position])
        response = httpx.post(url + target.path, content=body, headers=headers, timeout=10)
        if response.status_code != 200:
            raise RuntimeError(
                f"{target.label}: {target.path} answered {response.status_code}: {response.text}"
            )
        if first is None:
            binary = response.headers["content-type"].startswith("application/octet-stream")
            first = response.content if binary else response.json()
    assert first is not None
    return first


# ---------------------------------------------------------------------------- load generator


def lua_string(data: bytes) -> str:
    """A Lua string literal holding these exact bytes (decimal escapes for anything unusual)."""
    plain = set(range(0x20, 0x7F)) - {ord('"'), ord("\\")}
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in data) + '"'


def write_script(target: Target, folder: Path) -> Path:
    """A wrk script that pre-formats one request per body and rotates through them."""
    bodies = ",\n  ".join(lua_string(b) for b in target.bodies)
    lengths = ", ".join(str(n) for n in target.header_lengths or [])
    script = f"""
local bodies = {{
  {bodies}
}}
local header_lengths = {{ {lengths} }}
local requests = {{}}
local next_request = 0

init = function(args)
  for i, body in ipairs(bodies) do
    local headers = {{ ["Content-Type"] = "{target.content_type}" }}
    if header_lengths[i] then
      headers["Inference-Header-Content-Length"] = tostring(header_lengths[i])
    end
    requests[i] = wrk.format("POST", "{target.path}", headers, body)
  end
end

request = function()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
"""
    path = folder / f"{re.sub(r'[^a-z0-9]+', '-', target.label.lower()).strip('-')}.lua"
    path.write_text(script)
    return path


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS_MS[unit]


def parse_wrk(output: str) -> Measurement:
    """Requests/s, latency percentiles and error counts from ``wrk --latency`` output."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"(\d+) requests in", output)
    if not (rate and p50 and p99 and total):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return Measurement(
        requests_per_s=float(rate.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def run_wrk(target: Server, script: Path, *, seconds: float, connections: int) -> Measurement:
    """One wrk run on the client core, bounded in time, with the CPU both sides used."""
    command = [
        "taskset",
        "-c",
        CLIENT_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        target.url,
    ]
    server_before = target.child.cpu_seconds()
    proxy_before = target.proxy.cpu_seconds() if target.proxy is not None else 0.0
    busy_before = busy_cpu_seconds()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True)
    wall = time.perf_counter() - start
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = target.child.cpu_seconds() - server_before
    proxy_cpu = (target.proxy.cpu_seconds() - proxy_before) if target.proxy is not None else 0.0
    busy = busy_cpu_seconds() - busy_before
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    return replace(
        parse_wrk(done.stdout),
        server_cores=server_cpu / wall,
        client_cores=client_cpu / wall,
        proxy_cores=proxy_cpu / wall,
        other_cores=max(busy - server_cpu - client_cpu - proxy_cpu, 0.0) / wall,
    )


@dataclass(frozen=True)
class Job:
    """One row of a table: a label, the server it loads and the script wrk runs (with its
    own number of connections, or the run's)."""

    label: str
    server: Server
    script: Path
    connections: int | None = None


def measure(
    jobs: list[Job], *, rounds: int, seconds: float, warmup: float, connections: int
) -> dict[str, Measurement]:
    """Warm every job up, then run them round-robin ``rounds`` times.

    Interleaving spreads a noisy neighbour's bursts over every job instead of one. A
    neighbour only ever slows a run down, so each job reports its fastest run (with that
    run's latencies and CPU figures) and the errors of all its runs.
    """
    runs: dict[str, list[Measurement]] = {job.label: [] for job in jobs}
    if warmup > 0:
        for job in jobs:
            run_wrk(
                job.server, job.script, seconds=warmup, connections=job.connections or connections
            )
    for round_number in range(1, rounds + 1):
        for job in jobs:
            result = run_wrk(
                job.server, job.script, seconds=seconds, connections=job.connections or connections
            )
            runs[job.label].append(result)
            log(
                f"  round {round_number}/{rounds}  {job.label:<32} "
                f"{result.requests_per_s:>8,.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                f"  p99 {result.p99_ms:6.2f} ms  errors {result.errors}  CPU: server "
                f"{result.server_cores:.2f}, wrk {result.client_cores:.2f}, others "
                f"{result.other_cores:.2f} cores"
            )
    best = {}
    for label, results in runs.items():
        fastest = max(results, key=lambda m: m.requests_per_s)
        best[label] = replace(
            fastest,
            non_2xx=sum(m.non_2xx for m in results),
            socket_errors=sum(m.socket_errors for m in results),
        )
    return best


# ---------------------------------------------------------------------------- report


def print_table(rows: dict[str, Measurement], bar: float, ceiling: float, naive: float) -> None:
    """A Markdown table: figures, ratios to the bar, the ceiling and the naive route, CPU."""
    print(
        "| target | req/s | p50 | p99 | errors | / bar | / ceiling | × naive | server CPU"
        " | others' CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, m in rows.items():
        print(
            f"| {label} | {m.requests_per_s:,.0f} | {m.p50_ms:.2f} ms | {m.p99_ms:.2f} ms"
            f" | {m.errors} | {m.requests_per_s / bar:.2f} | {m.requests_per_s / ceiling:.2f}"
            f" | {m.requests_per_s / naive:.1f}x | {m.server_cores:.2f} | {m.other_cores:.2f} |"
        )


def print_scaling(rows: dict[str, Measurement]) -> None:
    """A Markdown table of the unpinned runs: throughput per core the server got."""
    base = next(iter(rows.values()))
    print(
        "| run | req/s | p50 | p99 | errors | × 1 worker | server CPU | wrk CPU | others' CPU"
        " | req/s per server core |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, m in rows.items():
        print(
            f"| {label} | {m.requests_per_s:,.0f} | {m.p50_ms:.2f} ms | {m.p99_ms:.2f} ms"
            f" | {m.errors} | {m.requests_per_s / base.requests_per_s:.2f}x"
            f" | {m.server_cores:.2f} | {m.client_cores:.2f} | {m.other_cores:.2f}"
            f" | {m.requests_per_s / max(m.server_cores, 1e-9):,.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per target")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load per target first")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--workers", type=int, default=2, help="server processes of the scaling run (1: skip it)"
    )
    parser.add_argument("--rows", type=int, default=60_000, help="generated training rows")
    parser.add_argument(
        "--traffic",
        action="store_true",
        help="only compare shipyard traffic's engine with wrk on the empty route (same run)",
    )
    parser.add_argument(
        "--log-ratio",
        action="store_true",
        help="only compare OIP JSON with the prediction log on and off (pinned, same run)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed; this benchmark needs it")
    sys.path.insert(0, str(APP_DIR))
    from balancer import balancer, nginx_path

    if not (args.traffic or args.log_ratio):
        nginx_path()  # or exit saying how to install it, before the training
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("this benchmark pins the server and wrk to different cores; it needs 2")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-serve-") as tmp:
        home = Path(tmp) / "home"
        samples, features, estimator_path, output_schema = train(home, args.rows)
        outputs = [o["name"] for o in output_schema["outputs"]]
        all_targets = targets(samples, features, outputs)
        scripts = {t.label: write_script(t, Path(tmp)) for t in all_targets}
        timing = {
            "rounds": args.rounds,
            "seconds": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
        }
        if args.log_ratio:
            compare_logging(home, all_targets, scripts, timing, args.workers)
            return
        if args.traffic:
            compare_traffic(home, all_targets, scripts, timing)
            return
        log(
            f"one server process on core {SERVER_CORE}, wrk -t1 -c{args.connections} on core "
            f"{CLIENT_CORE}; {args.rounds} round(s) of {args.duration:g} s per target"
        )
        oip_json = next(t for t in all_targets if t.label == "OIP JSON")
        bar = next(t for t in all_targets if t.label == BAR_LABEL)
        ours = [t for t in all_targets if t is not bar]
        with (
            server(home, workers=1, cores=SERVER_CORE, naive_estimator=estimator_path) as one,
            # The bar: a bare FastAPI app in its own uvicorn process on the same core, idle
            # while the others run.
            server(home, workers=1, cores=SERVER_CORE, naive_estimator=None, plain=True) as plain,
            # nginx shares wrk's core: the server keeps its own core to itself, as in the
            # direct runs, so the ratio is the cost of the hop, not of a stolen core.
            balancer(Path(tmp), [int(one.url.rsplit(":", 1)[1])], workers=1, cores=CLIENT_CORE) as (
                nginx_url,
                nginx,
            ),
        ):
            answers = {t.label: check(one.url, t) for t in ours}
            check(plain.url, bar)
            proxied = Server(nginx_url, one.child, proxy=nginx)
            check(proxied.url, oip_json)
            jobs = [Job(bar.label, plain, scripts[bar.label])]
            jobs += [Job(t.label, one, scripts[t.label]) for t in ours]
            jobs.insert(4, Job(NGINX_LABEL, proxied, scripts[oip_json.label]))
            results = measure(jobs, **timing)
        scaling: dict[str, Measurement] = {}
        if args.workers > 1:
            log(f"scaling: OIP JSON, servers unpinned (both cores), wrk on core {CLIENT_CORE}")
            with contextlib.ExitStack() as servers:
                jobs = []
                for workers in (1, args.workers):
                    unpinned = servers.enter_context(
                        server(home, workers=workers, cores=None, naive_estimator=None)
                    )
                    check(unpinned.url, oip_json)
                    label = f"OIP JSON, {workers} worker{'s' * (workers > 1)}, unpinned"
                    jobs.append(Job(label, unpinned, scripts[oip_json.label]))
                # The same load per worker: with the run's connections spread over N
                # workers, each forms batches 1/N the size, which costs CPU a request.
                label = f"OIP JSON, {args.workers} workers, {args.workers}x connections"
                each = args.connections * args.workers
                jobs.append(Job(label, unpinned, scripts[oip_json.label], connections=each))
                scaling = measure(jobs, **timing)

    naive_answer = answers["naive FastAPI + sklearn"]
    oip_answer = answers["OIP JSON"]
    assert isinstance(naive_answer, dict)
    assert isinstance(oip_answer, dict)
    served = {o["name"]: o["data"] for o in oip_answer["outputs"]}
    bar = results[BAR_LABEL].requests_per_s
    ceiling = results["empty route (ceiling)"].requests_per_s
    naive = results["naive FastAPI + sklearn"].requests_per_s
    ours = results["OIP JSON"]

    print(
        f"\nfraud model ({output_schema.get('task')}, outputs {', '.join(outputs)}); one uvicorn "
        f"process on core {SERVER_CORE}; wrk -t1 -c{args.connections} on core {CLIENT_CORE}; "
        f"fastest of {args.rounds} interleaved {args.duration:g}-s runs per target; single-row "
        f"requests; errors summed over all runs; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after (the machine is shared)\n"
        f"first row: P(fraud) served {np.ravel(served['probability'])[0]:.6f}, naive "
        f"scikit-learn {naive_answer['probability']:.6f}\n"
    )
    print("CPU columns: cores used during the run (CPU seconds per wall second); others' CPU")
    print("is every process on the machine but the server and wrk.\n")
    print_table(results, bar, ceiling, naive)
    print(
        f"\nOIP JSON: {ours.requests_per_s / bar:.2f}x the empty FastAPI route on uvicorn "
        f"(target ≥ 1.00), p99 {ours.p99_ms:.1f} ms (target ≤ 10 ms); "
        f"{ours.requests_per_s / ceiling:.2f} of Shipyard's empty route; "
        f"{ours.requests_per_s / naive:.1f}x the naive route (target ≥ 4x)"
    )
    for label in ("OIP binary tensors", "MLflow /invocations"):
        m = results[label]
        print(
            f"{label}: {m.requests_per_s / bar:.2f}x the bar (target ≥ 0.90), "
            f"p99 {m.p99_ms:.1f} ms (target ≤ 11 ms)"
        )
    proxied = results[NGINX_LABEL]
    print(
        f"OIP JSON through nginx: {proxied.requests_per_s / ours.requests_per_s:.2f} of direct "
        f"OIP JSON's req/s (target ≥ 0.85: nginx costs ≤ 15 %), p99 {proxied.p99_ms:.1f} ms "
        f"vs {ours.p99_ms:.1f} ms; nginx (1 worker, core {CLIENT_CORE} with wrk) used "
        f"{proxied.proxy_cores:.2f} of a core, wrk {proxied.client_cores:.2f}, the server "
        f"{proxied.server_cores:.2f} (direct: wrk {ours.client_cores:.2f}, server "
        f"{ours.server_cores:.2f})"
    )
    if scaling:
        print(
            f"\nscaling: OIP JSON on unpinned servers (both cores); wrk still on core {CLIENT_CORE}"
            " and competing with them for it.\n"
        )
        print_scaling(scaling)
        one_worker, many, loaded = scaling.values()
        per_core = [
            m.requests_per_s / max(m.server_cores, 1e-9) for m in (one_worker, many, loaded)
        ]
        print(
            f"\n{args.workers} workers: {per_core[1] / per_core[0]:.2f} of one worker's req/s per "
            f"server core at {args.connections} connections, {per_core[2] / per_core[0]:.2f} at "
            f"{args.workers * args.connections} (the same load per worker) (target ≥ 0.90: N "
            f"workers on N free cores give ≥ 0.9·N of one's req/s)"
        )


def compare_logging(
    home: Path,
    all_targets: list[Target],
    scripts: dict[str, Path],
    timing: dict[str, Any],
    workers: int,
) -> None:
    """OIP JSON req/s with the prediction log on (Parquet) and off, interleaved."""
    oip_json = next(t for t in all_targets if t.label == "OIP JSON")
    cores = SERVER_CORE if workers == 1 else None
    log(f"prediction log on vs off: OIP JSON, {workers} worker(s), cores {cores or 'all'}")
    with contextlib.ExitStack() as servers:
        jobs = []
        for kind in ("off", "parquet"):
            running = servers.enter_context(
                server(home, workers=workers, cores=cores, naive_estimator=None,
                       prediction_log=kind)
            )  # fmt: skip
            check(running.url, oip_json)
            jobs.append(Job(f"OIP JSON, log {kind}", running, scripts[oip_json.label]))
        results = measure(jobs, **timing)
    logged = list(home.parent.glob("predictions-*/**/part-*.parquet"))
    off, on = results["OIP JSON, log off"], results["OIP JSON, log parquet"]
    for label, m in results.items():
        print(f"{label:<24} {m.requests_per_s:>9,.0f} req/s  p99 {m.p99_ms:6.1f} ms")
    print(
        f"\nlog on / log off: {on.requests_per_s / off.requests_per_s:.3f} (target ≥ 0.90); "
        f"{len(logged)} Parquet files written"
    )


@dataclass(frozen=True)
class EngineRun:
    """What one run of ``shipyard traffic``'s engine measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cores: float

    @property
    def per_client_core(self) -> float:
        """Requests per CPU second the engine used."""
        return self.requests_per_s / max(self.client_cores, 1e-9)


def run_engine(
    target: Server, route: Target, bodies: Path, *, seconds: float, users: int
) -> EngineRun:
    """One run of the engine on the client core, bounded in time."""
    command = [
        "taskset", "-c", CLIENT_CORE, sys.executable, str(APP_DIR / "traffic_engine.py"),
        target.url, route.path, str(bodies), f"{seconds:g}", str(users),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return EngineRun(
        requests_per_s=result["requests"] / result["seconds"],
        p50_ms=result["p50_ms"] or 0.0,
        p99_ms=result["p99_ms"] or 0.0,
        errors=result["errors"],
        client_cores=result["cpu_seconds"] / result["seconds"],
    )


def compare_traffic(
    home: Path, all_targets: list[Target], scripts: dict[str, Path], timing: dict[str, Any]
) -> None:
    """wrk and shipyard traffic's engine on the empty route, interleaved, both pinned."""
    empty = next(t for t in all_targets if t.label == "empty route (ceiling)")
    bodies = home.parent / "empty-bodies.json"
    bodies.write_text(json.dumps([b.decode() for b in empty.bodies]))
    users = timing["connections"]
    log(
        f"load generators on the empty route: wrk -t1 -c{users} and shipyard traffic "
        f"(--users {users}, no think time), each on core {CLIENT_CORE}; server on core "
        f"{SERVER_CORE}"
    )
    wrk_runs: list[Measurement] = []
    engine_runs: list[EngineRun] = []
    load_before = os.getloadavg()[0]
    with server(home, workers=1, cores=SERVER_CORE, naive_estimator=None) as one:
        check(one.url, empty)
        seconds = timing["seconds"]
        if timing["warmup"] > 0:
            run_wrk(one, scripts[empty.label], seconds=timing["warmup"], connections=users)
            run_engine(one, empty, bodies, seconds=timing["warmup"], users=users)
        for round_number in range(1, timing["rounds"] + 1):
            wrk_runs.append(run_wrk(one, scripts[empty.label], seconds=seconds, connections=users))
            engine_runs.append(run_engine(one, empty, bodies, seconds=seconds, users=users))
            log(
                f"  round {round_number}: wrk {wrk_runs[-1].requests_per_s:,.0f} req/s, "
                f"shipyard traffic {engine_runs[-1].requests_per_s:,.0f} req/s "
                f"({engine_runs[-1].client_cores:.2f} cores)"
            )
    wrk = max(wrk_runs, key=lambda m: m.requests_per_s)
    engine = max(engine_runs, key=lambda m: m.requests_per_s)
    print(
        f"\nempty route; one uvicorn process on core {SERVER_CORE}; each load generator on core "
        f"{CLIENT_CORE}, {users} connections; fastest of {timing['rounds']} interleaved "
        f"{timing['seconds']:g}-s runs; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (the machine is shared)\n"
    )
    print("| load generator | req/s | p50 | p99 | errors | client CPU | req/s per client core |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| wrk (C, the ceiling) | {wrk.requests_per_s:,.0f} | {wrk.p50_ms:.2f} ms"
        f" | {wrk.p99_ms:.2f} ms | {sum(m.errors for m in wrk_runs)} | {wrk.client_cores:.2f}"
        f" | {wrk.requests_per_s / max(wrk.client_cores, 1e-9):,.0f} |"
    )
    print(
        f"| shipyard traffic engine | {engine.requests_per_s:,.0f} | {engine.p50_ms:.2f} ms"
        f" | {engine.p99_ms:.2f} ms | {sum(m.errors for m in engine_runs)}"
        f" | {engine.client_cores:.2f} | {engine.per_client_core:,.0f} |"
    )
    print(
        f"\nshipyard traffic: {engine.requests_per_s:,.0f} req/s "
        f"({engine.requests_per_s / wrk.requests_per_s:.2f} of wrk's) on "
        f"{engine.client_cores:.2f} of its core; {engine.per_client_core:,.0f} req/s per core it "
        "used (target ≥ 3,000 req/s from one core)"
    )


if __name__ == "__main__":
    main()

"""Start-up: how long ``shipyard --help`` takes, and ``shipyard serve`` until it is ready.

Trains the fraud example into a temporary home (``shipyard pipeline run fraud`` with 5,000
generated rows: the model is the one served, its size matters little), then, ``--repeat``
times each and alternately:

- ``shipyard --help``: the whole process, start to exit;
- ``shipyard serve --models fraud``: from starting the process to the first 200 from
  ``GET /v2/health/ready`` (polled every 10 ms), which answers once the model is loaded;
  the server is then stopped.

Prints each time and the medians. No pass/fail: the targets are 0.5 s and 2 s.

    python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shipyard.children import free_port
from shipyard.examples import example_spec

SHIPYARD = [sys.executable, "-m", "shipyard"]
READY_TIMEOUT_S = 60.0


def help_seconds(env: dict[str, str]) -> float:
    """One ``shipyard --help``, start to exit."""
    start = time.perf_counter()
    subprocess.run([*SHIPYARD, "--help"], env=env, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - start


def serve_seconds(env: dict[str, str]) -> float:
    """One ``shipyard serve`` from start to ready; stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    start = time.perf_counter()
    server = subprocess.Popen(
        [*SHIPYARD, "serve", "--models", "fraud", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - start < READY_TIMEOUT_S:
            if server.poll() is not None:
                raise SystemExit(f"shipyard serve exited with {server.returncode}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise SystemExit(f"shipyard serve was not ready within {READY_TIMEOUT_S:.0f} s")
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        env["SHIPYARD_HOME"] = str(Path(folder) / "home")
        spec = Path(folder) / "fraud.yaml"
        spec.write_text(example_spec("fraud").read_text().replace("rows: 60000", "rows: 5000"))
        subprocess.run(
            [*SHIPYARD, "pipeline", "run", str(spec)], env=env, capture_output=True, check=True
        )
        helps: list[float] = []
        serves: list[float] = []
        for repetition in range(options.repeat):
            helps.append(help_seconds(env))
            serves.append(serve_seconds(env))
            print(f"run {repetition + 1}: --help {helps[-1]:.2f} s, serve ready {serves[-1]:.2f} s")
    print(f"shipyard --help       median {statistics.median(helps):.2f} s  (target 0.5 s)")
    print(f"shipyard serve ready  median {statistics.median(serves):.2f} s  (target 2 s)")


if __name__ == "__main__":
    main()

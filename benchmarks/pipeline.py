"""A pipeline run in-process against the same run submitted to stage workers.

Runs the packaged fraud spec (60,000 generated transactions unless ``--rows`` says
otherwise) alternately in this process (``Runner``) and through ``submit_run`` to stage
worker processes (``shipyard pipeline worker``) already running on the home's embedded NATS
server, ``--repeat`` times each, on one fresh home (SQLite, local artifact store). Prints
each run's seconds (submit to the run recorded ``succeeded``), the medians and the overhead
of the workers over in-process: what the handoff through the artifact store (Arrow IPC,
skops), the stage events and the database records cost. No pass/fail: the target is an
overhead of at most 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shipyard.children import Child
from shipyard.examples import example_spec
from shipyard.messaging import open_broker
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.pipeline import Runner, parse_spec
from shipyard.pipeline.events import submit_run
from shipyard.registry import Registry
from shipyard.settings import Settings

WAIT_S = 600.0
# How often the run record is read while waiting: the figures come from the record itself,
# so reading it less often loses nothing, and each read takes CPU from the fit.
POLL_S = 0.5


def spec_text(rows: int | None) -> str:
    """The packaged fraud spec, with ``rows`` generated rows if given."""
    text = example_spec("fraud").read_text()
    if rows is not None:
        text = text.replace("rows: 60000", f"rows: {rows}")
    return text


async def submitted(registry: Registry, url: str, text: str) -> float:
    """Seconds from submitting the run to its record ``succeeded``: the run's own record,
    from ``started_at`` (written when it is queued) to ``finished_at`` (written by the worker
    that ran the last stage), so that the polling below (every ``POLL_S``) neither
    adds its interval nor takes CPU from the worker's fit."""
    broker = open_broker(url)
    try:
        run_id = await submit_run(registry, broker, parse_spec(text), text, prefix="pipeline")
    finally:
        await broker.close()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        run = registry.runs.get(run_id)
        if run.status == "succeeded":
            return recorded_seconds(registry, run_id)
        if run.status == "failed":
            raise SystemExit(f"the submitted run failed: {run.error}")
        await asyncio.sleep(POLL_S)
    raise SystemExit(f"the submitted run did not end within {WAIT_S:.0f} s")


def run_in_process(registry: Registry, spec_text: str) -> float:
    """Seconds of the same spec run by ``Runner`` here, measured the same way."""
    result = Runner(registry).run(parse_spec(spec_text), spec_text)
    return recorded_seconds(registry, result.run_id)


def recorded_seconds(registry: Registry, run_id: str) -> float:
    """A finished run's ``finished_at - started_at``."""
    run = registry.runs.get(run_id)
    assert run.finished_at is not None
    return (run.finished_at - run.started_at).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind")
    parser.add_argument("--rows", type=int, default=None, help="generated rows (default 60,000)")
    parser.add_argument("--workers", type=int, default=1, help="stage worker processes")
    options = parser.parse_args()
    text = spec_text(options.rows)
    parse_spec(text)  # a bad spec stops here, before any process starts
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(home=Path(folder) / "home")
        with Registry.open(settings) as registry, EmbeddedNats(settings.home) as url:
            workers = [
                Child(
                    [sys.executable, "-m", "shipyard", "pipeline", "worker", "--broker", url],
                    env=settings.child_env(),
                    log=settings.home / f"worker-{index}.log",
                    name=f"stage worker {index}",
                ).start()
                for index in range(options.workers)
            ]
            try:
                # A warm-up of each kind: imports, the first ONNX export, the queues.
                run_in_process(registry, text)
                asyncio.run(submitted(registry, url, text))
                local: list[float] = []
                remote: list[float] = []
                for repetition in range(options.repeat):
                    # Each run starts on a machine at rest, as the submitted one does after
                    # the wait's last poll (the threads of the last fit spin a while).
                    time.sleep(POLL_S)
                    local.append(run_in_process(registry, text))
                    time.sleep(POLL_S)
                    remote.append(asyncio.run(submitted(registry, url, text)))
                    print(
                        f"repetition {repetition + 1}: in-process {local[-1]:6.2f} s, "
                        f"stage workers {remote[-1]:6.2f} s"
                    )
            finally:
                for worker in workers:
                    worker.stop(30)
    rows = options.rows or 60_000
    in_process, on_workers = statistics.median(local), statistics.median(remote)
    print(
        f"fraud spec, {rows:,} rows, {options.workers} stage worker(s), {options.repeat} runs each"
    )
    print(f"in-process     median {in_process:6.2f} s  (min {min(local):.2f})")
    print(f"stage workers  median {on_workers:6.2f} s  (min {min(remote):.2f})")
    print(f"overhead       {on_workers / in_process - 1:+.1%}  (target at most +10 %)")


if __name__ == "__main__":
    main()

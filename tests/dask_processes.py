"""A real Dask cluster for tests: a ``dask scheduler`` and single-threaded ``dask worker``
processes on free 127.0.0.1 ports, each a ``shipyard.children.Child`` that a test may kill;
the house-price ensemble spec the cluster tests train, and how many learners a run stored.

    with dask_cluster(tmp_path, "a") as cluster:
        ... cluster.address ...
        cluster.workers[0].kill()   # or cluster.scheduler.kill()
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distributed import Client
from sqlalchemy import func, select

from shipyard.children import Child, free_port, tcp_open
from shipyard.registry import Registry
from shipyard.registry.tables import RunLearnerRow

DASK = Path(sys.executable).with_name("dask")
#: The workers import this module's task functions by name from here.
TESTS = Path(__file__).parent


def houses_spec(
    *, rows: int, data_seed: int, learners: int, features: int, seed: int, metrics: str
) -> str:
    """A spec bagging regression trees on generated house sales, always promoted."""
    return f"""\
name: houses
data:
  generate: {{dataset: housing, rows: {rows}, seed: {data_seed}}}
  target: price
task: regression
model: {{name: houses, type: DecisionTreeRegressor, params: {{min_samples_leaf: 2}}}}
ensemble: {{learners: {learners}, features: {features}, seed: {seed}}}
metrics: [{metrics}]
promotion: {{require: always}}
"""


def learners_stored(registry: Registry, run_id: str | None = None) -> int:
    """Learners stored for resume: of run ``run_id``, or of every run."""
    query = select(func.count()).select_from(RunLearnerRow)
    if run_id is not None:
        query = query.where(RunLearnerRow.run_id == run_id)
    with registry.transaction() as session:
        return int(session.scalar(query) or 0)


def slow_pow(data: int, recipe: int, index: int) -> int:
    """``pow(data, recipe, index)`` after 0.2 s: a learner-shaped task slow enough that
    results lost with a worker are still being computed again when a client reaches them."""
    time.sleep(0.2)
    return pow(data, recipe, index)


@dataclass(frozen=True)
class DaskCluster:
    """A running scheduler's address and the processes of the cluster."""

    address: str
    scheduler: Child
    workers: list[Child]


@contextmanager
def dask_cluster(folder: Path, name: str, *, workers: int = 2) -> Iterator[DaskCluster]:
    """A `dask scheduler` and ``workers`` single-threaded `dask worker` processes (no nanny:
    a killed worker stays dead) on 127.0.0.1, their logs in ``folder``; killed afterwards."""
    # The scheduler unpickles task graphs and the workers run them: both import task
    # functions of the tests (``slow_pow``) by name.
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = Child(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        log=folder / f"{name}-scheduler.log",
        env=env,
    )
    processes = [
        Child(
            [DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny"],
            log=folder / f"{name}-worker-{i}.log",
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])
                ),
            },
        )
        for i in range(workers)
    ]
    try:
        scheduler.start(tcp_open(port), timeout_s=60)
        for worker in processes:
            worker.start()
        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
        yield DaskCluster(address, scheduler, processes)
    finally:
        # Killed, not stopped: a worker whose scheduler is gone keeps reconnecting and
        # answers SIGTERM only after its own timeouts.
        for child in (*processes, scheduler):
            child.kill()

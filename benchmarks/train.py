"""Fitting an ensemble's learners on a Dask cluster: scaling, overhead, and a lost worker.

K learners (regression trees on generated house sales, as ``ensemble:`` specs fit them:
``pipeline.ensemble.fit_learner`` through ``cluster.learners.fit_on_cluster``) are fitted:

- (a) on a LocalCluster of 1 worker and of 2 workers (single-threaded processes): the
  speed-up of the second worker (target >= 1.7x);
- (b) with the same learner function under plain ``joblib.Parallel(n_jobs=2)`` (loky): the
  engine's overhead over a bare process pool (target within 10 %);
- (c) on 2 workers with one SIGKILLed once half of the learners are done (its nanny starts
  it again, its tasks are rescheduled): total time over the undisturbed fit (target <= 1.6x).

Workers are warmed up (imports, first task) before each timed fit; each figure is the best
of ``--rounds`` runs (a neighbour on a shared machine only slows runs down). Prints figures
and ratios, never passes or fails.

    python benchmarks/train.py [--learners 64] [--rows 40000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed import Client, LocalCluster
from joblib import Parallel, delayed

from shipyard.cluster.learners import fit_on_cluster
from shipyard.data import get_dataset
from shipyard.pipeline.ensemble import LearnerRecipe, TrainingData, fit_learner


def training_data(rows: int) -> TrainingData:
    """Generated house sales, features as float32 and the price."""
    dataset = get_dataset("housing")
    frame = dataset.generate(rows, 7)
    features = frame[dataset.schema.feature_names].to_numpy(np.float32)
    return TrainingData(features, frame["price"].to_numpy())


def on_cluster(
    client: Client,
    data: TrainingData,
    recipe: LearnerRecipe,
    learners: int,
    on_done: Callable[[int], None] | None = None,
) -> float:
    """Seconds to fit every learner on the client's cluster."""
    done: list[int] = []

    def result(index: int, _: Any) -> None:
        done.append(index)
        if on_done is not None:
            on_done(len(done))

    def failed(index: int, error: BaseException) -> None:
        raise RuntimeError(f"learner {index} failed: {error}")

    start = time.perf_counter()
    fit_on_cluster(
        client, fit_learner, data, recipe, range(learners), on_result=result, on_error=failed
    )
    seconds = time.perf_counter() - start
    assert sorted(done) == list(range(learners))
    return seconds


def local_cluster(workers: int) -> tuple[LocalCluster, Client]:
    """A local cluster like ``open_cluster``'s, warmed up: every worker has run a learner."""
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        memory_limit=0,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(workers, timeout=120)
    return cluster, client


def warm_up(client: Client, data: TrainingData, recipe: LearnerRecipe, workers: int) -> None:
    """Import the learner's code on every worker and run one learner on each."""
    small = TrainingData(data.features[:2000], data.target[:2000])
    futures = [
        client.submit(fit_learner, small, recipe, i, workers=[address], pure=False)
        for i, address in enumerate(client.scheduler_info(n_workers=-1)["workers"])
    ]
    client.gather(futures)
    assert len(futures) == workers


def best(rounds: int, run: Callable[[], float]) -> float:
    """The fastest of ``rounds`` runs."""
    return min(run() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", type=int, default=64, help="learners per fit (K)")
    parser.add_argument("--rows", type=int, default=40_000, help="training rows")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per figure")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.CRITICAL)

    data = training_data(args.rows)
    recipe = LearnerRecipe(
        model_type="DecisionTreeRegressor",
        params={"min_samples_leaf": 2},
        scale=False,
        bootstrap=True,
        sample_fraction=1.0,
        features_each=6,
        seed=1,
    )
    k = args.learners
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{k} learners: DecisionTreeRegressor(min_samples_leaf=2), {args.rows:,} rows")

    seconds: dict[int, float] = {}
    for workers in (1, 2):
        cluster, client = local_cluster(workers)
        try:
            warm_up(client, data, recipe, workers)
            seconds[workers] = best(
                args.rounds, lambda client=client: on_cluster(client, data, recipe, k)
            )
        finally:
            client.close()
            cluster.close()
        print(f"dask, {workers} worker(s): {seconds[workers]:7.2f} s")

    with Parallel(n_jobs=2, backend="loky") as parallel:
        parallel(delayed(fit_learner)(data, recipe, i) for i in range(2))  # start the pool

        def with_joblib() -> float:
            start = time.perf_counter()
            parallel(delayed(fit_learner)(data, recipe, i) for i in range(k))
            return time.perf_counter() - start

        joblib_seconds = best(args.rounds, with_joblib)
    print(f"joblib loky, 2 processes: {joblib_seconds:7.2f} s")

    def with_a_kill() -> float:
        cluster, client = local_cluster(2)
        try:
            warm_up(client, data, recipe, 2)
            pids = client.run(os.getpid)
            victim = next(iter(pids.values()))
            killed: list[int] = []

            def kill_at_half(done: int) -> None:
                if done >= k // 2 and not killed:
                    killed.append(done)
                    os.kill(victim, signal.SIGKILL)

            return on_cluster(client, data, recipe, k, on_done=kill_at_half)
        finally:
            client.close()
            cluster.close()

    killed_seconds = best(args.rounds, with_a_kill)
    print(f"dask, 2 workers, one SIGKILLed at {k // 2}/{k} done: {killed_seconds:7.2f} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| figure | value | target |")
    print("|---|---:|---:|")
    print(f"| 1 worker / 2 workers | {seconds[1] / seconds[2]:.2f}x | >= 1.7x |")
    print(
        f"| dask 2 workers / joblib 2 processes | {seconds[2] / joblib_seconds:.2f}x | <= 1.10x |"
    )
    ratio = killed_seconds / seconds[2]
    print(f"| one worker killed at 50 % / undisturbed | {ratio:.2f}x | <= 1.6x |")


if __name__ == "__main__":
    main()

"""Learners as Dask tasks: results and failures reported as they end, a cluster without
workers or a lost scheduler as ClusterError. (A worker SIGKILLed mid-fit: tests/pipeline/
test_ensemble.py; a scheduler killed and the run resumed: tests/cli/test_pipeline.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from dask_processes import dask_cluster, slow_pow
from shipyard.cluster.learners import fit_on_cluster
from shipyard.errors import ClusterError


def _fit(data: list[int], recipe: int, index: int) -> int:
    if index == 3:
        raise ValueError(f"learner {index} cannot be fitted")
    return data[index] * recipe


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    # Threads in this process: the reporting logic is what is tested here, not processes.
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster, set_as_default=False) as opened,
    ):
        yield opened


def test_each_result_and_each_failure_is_reported_once(client: Client) -> None:
    results: dict[int, int] = {}
    errors: dict[int, BaseException] = {}
    fit_on_cluster(
        client,
        _fit,
        [10, 11, 12, 13, 14],
        2,
        [0, 1, 3, 4],
        on_result=results.__setitem__,
        on_error=errors.__setitem__,
    )
    assert results == {0: 20, 1: 22, 4: 28}
    assert list(errors) == [3]
    assert "learner 3 cannot be fitted" in str(errors[3])


def test_nothing_to_fit_sends_nothing(client: Client) -> None:
    fit_on_cluster(client, _fit, [], 1, [], on_result=print, on_error=print)


def test_a_cluster_without_workers_says_what_to_start() -> None:
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster, set_as_default=False) as empty,
        pytest.raises(ClusterError, match=r"no worker after 0.5 s; start one \(`dask worker"),
    ):
        fit_on_cluster(
            empty, _fit, [1], 1, [0], on_result=print, on_error=print, workers_timeout_s=0.5
        )


def test_results_lost_with_their_worker_before_they_were_fetched_are_computed_again(
    tmp_path: Path,
) -> None:
    """A learner finished on a worker that is SIGKILLed before its result is fetched is
    "lost", not failed: the scheduler computes it again on the other worker, and it is
    reported as a result (it was once reported as a failure with no exception)."""
    results: dict[int, int] = {}
    errors: dict[int, BaseException] = {}
    indices = list(range(1, 21))
    with (
        dask_cluster(tmp_path, "lost") as cluster,
        Client(cluster.address, set_as_default=False) as client,
    ):

        def on_result(index: int, value: int) -> None:
            if not results:  # the first result: let the rest finish, then kill a holder
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not _all_done(client, len(indices)):
                    time.sleep(0.05)
                cluster.workers[0].kill()
                deadline = time.monotonic() + 30
                while len(client.scheduler_info()["workers"]) > 1:
                    assert time.monotonic() < deadline, "the scheduler kept the dead worker"
                    time.sleep(0.05)
            results[index] = value

        fit_on_cluster(
            client, slow_pow, 7, 3, indices, on_result=on_result, on_error=errors.__setitem__
        )
    assert errors == {}
    assert results == {i: pow(7, 3, i) for i in indices}


def _all_done(client: Client, learners: int) -> bool:
    """Whether the scheduler holds every learner's result in some worker's memory."""
    held = client.run_on_scheduler(
        lambda dask_scheduler: sum(
            1
            for key, state in dask_scheduler.tasks.items()
            if str(key).startswith("learner-") and state.state == "memory"
        )
    )
    return bool(held >= learners)

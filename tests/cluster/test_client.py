"""The cluster client: a local cluster by default, a clear error for an unreachable scheduler."""

from __future__ import annotations

import socket

import pytest

from shipyard.cluster import cluster_description, open_cluster
from shipyard.errors import ClusterError


def test_local_cluster_runs_tasks_on_its_worker_processes() -> None:
    with open_cluster(workers=2) as client:
        assert cluster_description(client).startswith("2 workers at tcp://127.0.0.1:")
        assert client.gather(client.map(pow, [2, 3], [10, 2])) == [1024, 9]


def test_an_unreachable_scheduler_says_what_to_start() -> None:
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with (
        pytest.raises(ClusterError, match="dask scheduler") as caught,
        open_cluster(address, connect_timeout_s=1),
    ):
        pass
    assert caught.value.exit_code == 6
    assert address in str(caught.value)

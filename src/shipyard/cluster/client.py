"""Opens a Dask client: on a local cluster of worker processes, or on a running scheduler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from shipyard.errors import ClusterError

if TYPE_CHECKING:
    from distributed import Client

#: How long to wait for a scheduler to answer before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10.0


@contextmanager
def open_cluster(
    scheduler: str = "",
    *,
    workers: int = 2,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> Iterator[Client]:
    """A Dask client on ``scheduler``'s cluster, or on a new local cluster of ``workers``
    single-threaded processes when ``scheduler`` is empty; closed (and the local cluster
    shut down) on exit. An unreachable scheduler raises ``ClusterError``."""
    from distributed import Client, LocalCluster

    # Dask logs every lost worker and retried connection at WARNING; Shipyard reports what
    # matters to the user itself.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        try:
            client = Client(scheduler, timeout=connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler} within "
                f"{connect_timeout_s:g} s ({error}); start it (`dask scheduler`, and "
                "`dask worker ADDRESS` on each machine) or leave --scheduler (and "
                "SHIPYARD_SCHEDULER) out to work on this machine alone"
            ) from error
        try:
            yield client
        finally:
            with suppress(Exception):  # a lost scheduler must not hide the run's own error
                client.close(timeout=5)
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # The scheduler serves its health routes over HTTP even with the dashboard off, on
        # 8787 unless told otherwise: another cluster there would make it warn and move.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        memory_limit=0,  # no pausing or killing of workers by Dask's memory monitor
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def cluster_description(client: Client) -> str:
    """``N workers at ADDRESS`` for progress lines and run records."""
    info = client.scheduler_info(n_workers=-1)
    return f"{len(info.get('workers', {}))} workers at {info.get('address', '?')}"

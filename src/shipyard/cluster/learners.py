"""Fitting many learners as Dask tasks: one pure task per index, results as they finish.

The training data goes to the cluster as the result of a task (``client.submit``), not as
scattered data: the scheduler keeps the task, so when the worker holding the data dies the
data is computed again from it, like any lost result. A learner task whose worker dies is
rescheduled on another by the scheduler itself (up to ``distributed.scheduler.allowed-
failures`` deaths per task; past that it fails with ``KilledWorker``). A task that raises is
not retried: learners are deterministic, so it would raise again. A lost scheduler cancels
every future; that becomes ``ClusterError`` (what finished before was handed out already).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from shipyard.errors import ClusterError, ShipyardError

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

D = TypeVar("D")
R = TypeVar("R")
T = TypeVar("T")

#: How long to wait for a scheduler's first worker before saying there is none.
WORKERS_TIMEOUT_S = 30.0


def _data(value: D) -> D:
    """The task whose result is the training data (recomputable from the scheduler's copy)."""
    return value


def fit_on_cluster(
    client: Client,
    fit: Callable[[D, R, int], T],
    data: D,
    recipe: R,
    indices: Iterable[int],
    *,
    on_result: Callable[[int, T], None],
    on_error: Callable[[int, BaseException], None],
    workers_timeout_s: float = WORKERS_TIMEOUT_S,
) -> None:
    """Run ``fit(data, recipe, i)`` for each index as its own task; call ``on_result`` or
    ``on_error`` in this thread as each one ends, in the order they end. Raises
    ``ClusterError`` when the cluster has no worker or the scheduler is lost."""
    from distributed import as_completed

    wanted = list(indices)
    if not wanted:
        return
    try:
        client.wait_for_workers(1, timeout=workers_timeout_s)
    except TimeoutError as error:
        raise ClusterError(
            f"the Dask scheduler has no worker after {workers_timeout_s:g} s; start one "
            "(`dask worker ADDRESS --nthreads 1`) or leave --scheduler out"
        ) from error
    run = uuid.uuid4().hex[:12]  # keys of this call only: no result cached from another
    data_future = client.submit(_data, data, key=f"training-data-{run}", pure=False)
    futures: dict[Any, int] = {
        client.submit(fit, data_future, recipe, index, key=f"learner-{index}-{run}", retries=0): (
            index
        )
        for index in wanted
    }
    try:
        # Results are fetched in the background as tasks finish (with_results), not one
        # round trip per learner in this loop; a failed learner comes as its exception.
        completed = as_completed(futures, loop=client.loop, with_results=True, raise_errors=False)
        for future, outcome in completed:
            index = futures[future]
            if future.status == "cancelled":
                raise _lost(client)
            if future.status == "error" or isinstance(outcome, BaseException):
                failure = outcome if isinstance(outcome, BaseException) else future.exception()
                if _cancelled(failure) or isinstance(failure, OSError):
                    raise _lost(client) from failure
                logger.warning("learner %d failed: %s: %s", index, type(failure).__name__, failure)
                on_error(index, failure)
            else:
                on_result(index, outcome)
            future.release()
    except ShipyardError:
        raise  # the callbacks' own (a registry that cannot be written, …)
    except Exception as error:
        # A result being fetched when the scheduler dies fails with CommClosedError (an
        # OSError), a future cancelled by the lost connection with FutureCancelledError.
        if isinstance(error, OSError) or _cancelled(error) or client.status != "running":
            raise _lost(client) from error
        raise
    finally:
        data_future.release()


def _cancelled(error: BaseException) -> bool:
    from distributed.client import FutureCancelledError

    return isinstance(error, FutureCancelledError)


def _lost(client: Client) -> ClusterError:
    # From here on, Dask's client logs its failing reconnects at ERROR; the ClusterError
    # below says what happened, once.
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    address = getattr(client.scheduler, "address", "?")
    return ClusterError(
        f"lost the Dask scheduler at {address} while fitting learners; start a scheduler "
        "and workers again and resume the run"
    )

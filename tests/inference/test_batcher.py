"""The Batcher: coalescing, carrying, isolating a bad request, observing, telling answered
batches, draining, cancelling."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from shipyard.errors import BatcherClosedError
from shipyard.inference.batcher import Batcher
from shipyard.inference.predictor import Features, Outputs

T = TypeVar("T")
TIMEOUT = 30  # bounds every wait; no test relies on timing


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine to completion, bounded so a hang fails instead of stalling."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, TIMEOUT)

    return asyncio.run(bounded())


class Recorder:
    """A predict function that records each batch and returns each row's first value doubled."""

    def __init__(self, fail_on_nan: bool = False) -> None:
        self.batches: list[Features] = []
        self.fail_on_nan = fail_on_nan

    def __call__(self, features: Features) -> Outputs:
        self.batches.append(features.copy())
        if self.fail_on_nan and np.isnan(features).any():
            raise ValueError("NaN in batch")
        return {"double": features[:, 0] * 2, "rows": features.copy()}

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def rows(*values: float, width: int = 2) -> npt.NDArray[np.float32]:
    """One row per value, each row filled with that value."""
    return np.repeat(np.asarray(values, np.float32).reshape(-1, 1), width, axis=1)


async def submit_all(batcher: Batcher, requests: list[Features]) -> list[Outputs]:
    """Submit every request at once, as concurrent callers would."""
    return await asyncio.gather(*(batcher.submit(r) for r in requests))


def test_concurrent_submits_are_coalesced_and_split_back_in_order() -> None:
    predict = Recorder()
    requests = [rows(float(i)) for i in range(50)]

    async def scenario() -> list[Outputs]:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=50)
        try:
            return await submit_all(batcher, requests)
        finally:
            await batcher.close()

    results = run(scenario())
    assert all(size <= 16 for size in predict.sizes)
    assert sum(predict.sizes) == 50
    assert len(predict.sizes) < 50
    assert max(predict.sizes) == 16  # all 50 were queued before the first batch formed
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["double"], [2.0 * i])
        np.testing.assert_array_equal(result["rows"], requests[i])


def test_multi_row_requests_get_exactly_their_own_rows() -> None:
    predict = Recorder()
    requests = [rows(*[float(10 * i + j) for j in range(i % 4 + 1)]) for i in range(20)]

    async def scenario() -> list[Outputs]:
        batcher = Batcher(predict, max_batch_size=8, max_batch_delay_ms=50)
        try:
            return await submit_all(batcher, requests)
        finally:
            await batcher.close()

    results = run(scenario())
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["rows"], request)
        np.testing.assert_array_equal(result["double"], request[:, 0] * 2)
    assert all(size <= 8 for size in predict.sizes)


def test_a_request_that_does_not_fit_is_carried_whole_to_the_next_batch() -> None:
    predict = Recorder()
    # 3 + 3 rows fill 6 of 8; the next request of 3 does not fit and must not be split.
    requests = [rows(1, 1, 1), rows(2, 2, 2), rows(3, 3, 3), rows(4)]

    async def scenario() -> list[Outputs]:
        batcher = Batcher(predict, max_batch_size=8, max_batch_delay_ms=50)
        try:
            return await submit_all(batcher, requests)
        finally:
            await batcher.close()

    results = run(scenario())
    assert predict.sizes == [6, 4]
    np.testing.assert_array_equal(predict.batches[1][:, 0], [3, 3, 3, 4])
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["rows"], request)


def test_a_request_larger_than_the_batch_size_runs_alone() -> None:
    predict = Recorder()
    big = rows(*[float(i) for i in range(10)])
    requests = [rows(-1), big, rows(-2)]

    async def scenario() -> list[Outputs]:
        batcher = Batcher(predict, max_batch_size=4, max_batch_delay_ms=50)
        try:
            return await submit_all(batcher, requests)
        finally:
            await batcher.close()

    results = run(scenario())
    assert 10 in predict.sizes
    alone = predict.batches[predict.sizes.index(10)]
    np.testing.assert_array_equal(alone, big)
    np.testing.assert_array_equal(results[1]["rows"], big)
    np.testing.assert_array_equal(results[0]["rows"], rows(-1))
    np.testing.assert_array_equal(results[2]["rows"], rows(-2))


def test_a_failing_request_does_not_fail_its_neighbours() -> None:
    predict = Recorder(fail_on_nan=True)
    requests = [rows(1), rows(2, np.nan), rows(3), rows(4, 5)]

    async def scenario() -> list[Outputs | BaseException]:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=50)
        try:
            return await asyncio.gather(
                *(batcher.submit(r) for r in requests), return_exceptions=True
            )
        finally:
            await batcher.close()

    results = run(scenario())
    assert predict.sizes[0] == 6  # they were batched together, and that batch failed
    bad = results[1]
    assert isinstance(bad, ValueError)
    assert "NaN" in str(bad)
    for i in (0, 2, 3):
        good = results[i]
        assert isinstance(good, dict)
        np.testing.assert_array_equal(good["rows"], requests[i])


def test_a_request_that_cannot_be_stacked_with_its_neighbours_is_retried_alone() -> None:
    predict = Recorder()
    requests = [rows(1), rows(2, width=3), rows(3)]

    async def scenario() -> list[Outputs | BaseException]:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=50)
        try:
            return await asyncio.gather(
                *(batcher.submit(r) for r in requests), return_exceptions=True
            )
        finally:
            await batcher.close()

    results = run(scenario())
    assert predict.sizes == [1, 1, 1]  # stacking failed, so each ran on its own
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, dict)
        np.testing.assert_array_equal(result["rows"], request)


def test_observer_is_told_rows_and_wait() -> None:
    seen: list[tuple[int, float]] = []
    predict = Recorder()

    async def scenario() -> None:
        batcher = Batcher(
            predict,
            max_batch_size=16,
            max_batch_delay_ms=50,
            observer=lambda rows, wait: seen.append((rows, wait)),
        )
        try:
            await submit_all(batcher, [rows(1), rows(2, 3), rows(4)])
            await batcher.submit(rows(5, 6, 7))
        finally:
            await batcher.close()

    run(scenario())
    assert [n for n, _ in seen] == predict.sizes == [4, 3]
    assert all(isinstance(wait, float) and wait >= 0 for _, wait in seen)


def test_a_failing_observer_does_not_stop_predictions() -> None:
    def observer(rows: int, wait: float) -> None:
        raise RuntimeError("metrics backend is down")

    async def scenario() -> Outputs:
        batcher = Batcher(Recorder(), observer=observer)
        try:
            return await batcher.submit(rows(1))
        finally:
            await batcher.close()

    np.testing.assert_array_equal(run(scenario())["double"], [2.0])


Told = tuple[Features, Outputs, list[tuple[Any, int, int]]]


def test_answered_is_told_each_batch_once_with_the_notes_of_its_requests() -> None:
    told: list[Told] = []
    predict = Recorder()

    async def scenario() -> None:
        batcher = Batcher(
            predict,
            max_batch_size=16,
            max_batch_delay_ms=50,
            answered=lambda f, o, notes: told.append((f, o, list(notes))),
        )
        try:
            await asyncio.gather(
                batcher.submit(rows(1), "a"),
                batcher.submit(rows(2, 3)),  # no note: predicted, not told
                batcher.submit(rows(4, 5, 6), "c"),
            )
            await batcher.submit(rows(7), "d")
        finally:
            await batcher.close()

    run(scenario())
    assert predict.sizes == [6, 1]
    (features, outputs, notes), (_, second, alone) = told
    np.testing.assert_array_equal(features, predict.batches[0])
    assert notes == [("a", 0, 1), ("c", 3, 6)]  # the rows of each request in the batch's
    np.testing.assert_array_equal(outputs["double"][3:6], [8, 10, 12])
    assert alone == [("d", 0, 1)]
    np.testing.assert_array_equal(second["double"], [14])


def test_answered_hears_only_of_requests_that_were_answered() -> None:
    """A request that failed (retried alone, and failing) or whose caller went is not told."""
    told: list[Told] = []
    predict = Recorder(fail_on_nan=True)

    async def scenario() -> None:
        batcher = Batcher(
            predict,
            max_batch_size=64,
            max_batch_delay_ms=60_000,
            answered=lambda f, o, notes: told.append((f, o, list(notes))),
        )
        impatient = asyncio.ensure_future(batcher.submit(rows(-1), "gone"))
        others = [
            asyncio.ensure_future(batcher.submit(rows(value), name))
            for value, name in ((1, "one"), (np.nan, "bad"), (3, "three"))
        ]
        await asyncio.sleep(0)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        await batcher.close()
        await asyncio.gather(*others, return_exceptions=True)

    run(scenario())
    assert [notes for _, _, notes in told] == [[("one", 0, 1)], [("three", 0, 1)]]


def test_a_failing_answered_hook_does_not_stop_predictions() -> None:
    def answered(features: Features, outputs: Outputs, notes: Any) -> None:
        raise RuntimeError("the log is broken")

    async def scenario() -> list[Outputs]:
        batcher = Batcher(Recorder(), answered=answered)
        try:
            return [await batcher.submit(rows(1), "a"), await batcher.submit(rows(2), "b")]
        finally:
            await batcher.close()

    assert [float(r["double"][0]) for r in run(scenario())] == [2.0, 4.0]


def test_outputs_of_the_wrong_length_fail_the_requests_instead_of_misrouting_rows() -> None:
    def predict(features: Features) -> Outputs:
        return {"double": features[:1, 0] * 2}

    async def scenario() -> list[Outputs | BaseException]:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=50)
        try:
            return list(
                await asyncio.gather(
                    batcher.submit(rows(1)), batcher.submit(rows(2, 3)), return_exceptions=True
                )
            )
        finally:
            await batcher.close()

    first, second = run(scenario())
    assert isinstance(first, dict)  # alone, one row in gives one row out
    assert isinstance(second, ValueError)
    assert "returned 1 rows" in str(second)


def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    predict = Recorder()

    async def scenario() -> list[Outputs]:
        # A long delay: without close() draining them these would wait for company.
        batcher = Batcher(predict, max_batch_size=64, max_batch_delay_ms=60_000)
        waiting = [asyncio.ensure_future(batcher.submit(rows(float(i)))) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        assert all(task.done() for task in waiting)
        with pytest.raises(BatcherClosedError, match="retry"):
            await batcher.submit(rows(9))
        return [task.result() for task in waiting]

    results = run(scenario())
    assert [float(r["double"][0]) for r in results] == [0, 2, 4, 6, 8]
    assert sum(predict.sizes) == 5


def test_close_without_any_request_and_twice_is_fine() -> None:
    async def scenario() -> None:
        batcher = Batcher(Recorder())
        await batcher.close()
        await batcher.close()
        with pytest.raises(BatcherClosedError):
            await batcher.submit(rows(1))

    run(scenario())


def test_a_cancelled_caller_does_not_break_the_batch_for_others() -> None:
    predict = Recorder()

    async def scenario() -> list[Outputs]:
        batcher = Batcher(predict, max_batch_size=64, max_batch_delay_ms=60_000)
        impatient = asyncio.ensure_future(batcher.submit(rows(-1)))
        others = [asyncio.ensure_future(batcher.submit(rows(float(i)))) for i in range(3)]
        await asyncio.sleep(0)  # every request is queued; the batch has not formed yet
        impatient.cancel()  # its caller gives up (a client that went away)
        with pytest.raises(asyncio.CancelledError):
            await impatient
        await batcher.close()  # drains the others, long before their delay ends
        return [task.result() for task in others]

    results = run(scenario())
    assert [float(r["double"][0]) for r in results] == [0, 2, 4]
    assert predict.sizes == [3]  # the cancelled request's row was left out of the batch


def test_predict_in_thread_leaves_the_event_loop_free_while_the_model_runs() -> None:
    """A predictor that blocks until the event loop does something: inline it would hang
    (the run's bound fails the test); in a thread the loop goes on and releases it."""
    released = threading.Event()
    threads: list[int] = []

    def predict(features: Features) -> Outputs:
        threads.append(threading.get_ident())
        if not released.wait(TIMEOUT):
            raise TimeoutError("the event loop never ran while the model did")
        return {"double": features[:, 0] * 2}

    async def scenario() -> Outputs:
        batcher = Batcher(predict, max_batch_delay_ms=0, predict_in_thread=True)
        try:
            pending = asyncio.ensure_future(batcher.submit(rows(1, 2)))
            while not threads:  # the model has started, in its thread
                await asyncio.sleep(0.001)
            released.set()  # the loop is free: this coroutine runs
            return await pending
        finally:
            await batcher.close()

    outputs = run(scenario())
    np.testing.assert_array_equal(outputs["double"], [2, 4])
    assert threads
    assert threads[0] != threading.get_ident()


def test_a_failing_request_in_a_thread_does_not_fail_its_neighbours() -> None:
    predict = Recorder(fail_on_nan=True)
    requests = [rows(1), rows(np.nan), rows(3)]

    async def scenario() -> list[Outputs | BaseException]:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=50, predict_in_thread=True)
        try:
            return await asyncio.gather(
                *(batcher.submit(r) for r in requests), return_exceptions=True
            )
        finally:
            await batcher.close()

    results = run(scenario())
    assert isinstance(results[1], ValueError)
    for i in (0, 2):
        good = results[i]
        assert isinstance(good, dict)
        np.testing.assert_array_equal(good["rows"], requests[i])


def test_a_request_without_company_runs_at_once_rather_than_waiting_out_the_delay() -> None:
    # A delay far beyond the test's bound: the request can only finish if the batcher stops
    # waiting once the event loop had its turns and no other request came.
    predict = Recorder()

    async def scenario() -> Outputs:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=3_600_000)
        try:
            return await batcher.submit(rows(1.0))
        finally:
            await batcher.close()

    result = run(scenario())
    np.testing.assert_array_equal(result["double"], [2.0])
    assert predict.sizes == [1]


def test_requests_that_arrive_while_the_loop_turns_still_share_the_batch() -> None:
    # Callers that submit a turn or two after the first (as request tasks started by the
    # same socket reads do) join its batch.
    predict = Recorder()

    async def late(batcher: Batcher, turns: int, value: float) -> Outputs:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await batcher.submit(rows(value))

    async def scenario() -> list[Outputs]:
        batcher = Batcher(predict, max_batch_size=16, max_batch_delay_ms=3_600_000)
        try:
            return await asyncio.gather(*(late(batcher, i % 3, float(i)) for i in range(6)))
        finally:
            await batcher.close()

    results = run(scenario())
    assert predict.sizes == [6]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["double"], [2.0 * i])

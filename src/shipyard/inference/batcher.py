"""Micro-batching: single requests in, one predictor call per batch, results split back.

A ``Batcher`` serves one loaded model version. Requests (each a few rows) wait at most
``max_batch_delay_ms`` for company, up to ``max_batch_size`` rows per call, and no longer
than company keeps coming: once the event loop has had ``IDLE_TURNS`` turns without a new
request (every request whose bytes had arrived has reached the queue), the batch runs.
Waiting on would leave the core idle: under load the callers are all in this batch, and
their next requests come only after its answers. Batches still form on their own, from the
requests that arrive while the previous one computes. When a batch
fails, its requests are retried one by one, so one bad request never fails its neighbours.
With ``predict_in_thread`` the predictor runs in a thread (ONNX Runtime releases the GIL),
so the event loop parses and publishes the next batch while the model computes this one:
the stream scorer's choice, where each batch is hundreds of rows.

A request may carry a ``note`` (who asked: its prediction ids, when it arrived); a batcher
given ``answered`` tells it, once a batch, the batch's stacked rows and outputs with the
notes of the requests it answered, so what every request would do after its answer (log
its rows) is done once for the batch: thousands of one-row requests a second cost a few
hundred calls, not thousands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.errors import BatcherClosedError
from shipyard.inference.predictor import Features, Outputs

logger = logging.getLogger(__name__)

IDLE_TURNS = 3
"""Event-loop turns without a new request after which a batch stops waiting for company:
one for the socket reads that are ready, one for the request tasks they start, one to
spare for a route that awaits once more before it submits."""

BatchObserver = Callable[[int, float], None]
"""Told (rows in the batch, seconds the oldest request waited) for each batch."""

BatchAnswered = Callable[[Features, Outputs, Sequence[tuple[Any, int, int]]], None]
"""Told, for each batch answered, its stacked rows, its outputs and the ``(note, start,
stop)`` of each answered request that carries a note: its rows are ``start:stop`` of the
batch's."""


@dataclass
class _Pending:
    features: Features
    future: asyncio.Future[Outputs]
    enqueued: float
    note: Any = None


class Batcher:
    """Collects requests for one predictor into batches; one worker task per batcher."""

    def __init__(
        self,
        predict: Callable[[Features], Outputs],
        *,
        max_batch_size: int = 64,
        max_batch_delay_ms: float = 2.0,
        observer: BatchObserver | None = None,
        answered: BatchAnswered | None = None,
        predict_in_thread: bool = False,
    ) -> None:
        self._predict = predict
        self._in_thread = predict_in_thread
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000
        self._observer = observer
        self._answered = answered
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, features: Features, note: Any = None) -> Outputs:
        """Predict these rows as part of a batch; returns only their outputs. A ``note``
        reaches ``answered`` with the rows once they are answered."""
        if self._closing:
            raise BatcherClosedError("model version is being replaced; retry")
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        loop = asyncio.get_running_loop()
        pending = _Pending(features, loop.create_future(), time.perf_counter(), note)
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        """Stop accepting requests, finish the queued ones, end the worker."""
        self._closing = True
        if self._worker is not None:
            self._queue.put_nowait(None)
            await self._worker

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch is None:
                return
            if batch:
                try:
                    await self._execute(batch)
                except Exception as error:  # a dead worker would leave every caller waiting
                    logger.exception("batch of %d requests failed unexpectedly", len(batch))
                    for pending in batch:
                        _fail(pending, error)
                # Let the event loop deliver results and accept requests between batches.
                await asyncio.sleep(0)

    async def _collect(self) -> list[_Pending] | None:
        first = self._carry or await self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, rows = [first], len(first.features)
        deadline = first.enqueued + self.max_batch_delay
        idle = 0
        while rows < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if idle >= IDLE_TURNS or time.perf_counter() >= deadline:
                    break
                idle += 1
                await asyncio.sleep(0)  # one turn of the loop: reads, then request tasks
                continue
            idle = 0
            if item is None:  # closing: finish this batch, then stop
                self._queue.put_nowait(None)
                break
            if rows + len(item.features) > self.max_batch_size:
                self._carry = item
                break
            batch.append(item)
            rows += len(item.features)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # cancelled by a gone client
        if not live:
            return
        self._observe(live)
        try:
            # Inside the try: rows that cannot be stacked with their neighbours (another width)
            # or outputs that do not split back are that batch's failure, not the worker's.
            features = (
                live[0].features if len(live) == 1 else np.concatenate([p.features for p in live])
            )
            if self._in_thread:
                outputs = await asyncio.to_thread(self._predict, features)
            else:
                outputs = self._predict(features)
            results = _split(outputs, live)
        except Exception as error:
            if len(live) == 1:
                _fail(live[0], error)
                return
            logger.info("batch of %d requests failed (%s); retrying one by one", len(live), error)
            for pending in live:
                await self._execute([pending])
            return
        notes = []
        start = 0
        for pending, result in zip(live, results, strict=True):
            stop = start + len(pending.features)
            if not pending.future.done():  # a client gone meanwhile was not answered
                pending.future.set_result(result)
                if pending.note is not None:
                    notes.append((pending.note, start, stop))
            start = stop
        if notes and self._answered is not None:
            try:
                self._answered(features, outputs, notes)
            except Exception:  # a broken log must not stop predictions
                logger.exception("batch hook failed")

    def _observe(self, live: list[_Pending]) -> None:
        if self._observer is None:
            return
        rows = sum(len(p.features) for p in live)
        try:
            self._observer(rows, time.perf_counter() - min(p.enqueued for p in live))
        except Exception:  # a broken metric must not stop predictions
            logger.exception("batch observer failed")


def _fail(pending: _Pending, error: Exception) -> None:
    if pending.future.done():
        return
    if isinstance(error, StopIteration):  # a future refuses to carry StopIteration
        error = RuntimeError(f"predict raised StopIteration({error})")
    pending.future.set_exception(error)


def _split(outputs: Outputs, live: list[_Pending]) -> list[Outputs]:
    """Each request's rows of the batch's outputs, in order."""
    rows = sum(len(p.features) for p in live)
    for name, values in outputs.items():
        if len(values) != rows:
            raise ValueError(f"predict returned {len(values)} rows of {name!r} for {rows} rows")
    results, start = [], 0
    for pending in live:
        end = start + len(pending.features)
        results.append({k: v[start:end] for k, v in outputs.items()})
        start = end
    return results

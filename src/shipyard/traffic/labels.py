"""Labels waiting for their delay: users drop them here and go on; a sender takes the due
ones in batches, so a user's loop never waits on feedback."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: Attempts at sending one batch that failed for a reason that may pass (a 5xx, a reset).
SEND_ATTEMPTS = 3


@dataclass(frozen=True)
class Label:
    """The true label (or, with noise, a wrong one) of one answered prediction."""

    id: str
    label: Any
    delay_s: float
    wrong: bool = False


@dataclass(frozen=True)
class Sent:
    """What became of a batch: ``None`` when stored, else the kind of failure, and whether
    trying again may help."""

    failure: str | None = None
    retryable: bool = False
    fatal: str | None = None
    """A message that should stop the run (the credentials are refused)."""


class LabelSink(Protocol):
    """Where feedback goes: ``POST /v1/feedback`` or the ``<model>.feedback`` queue."""

    async def send(self, labels: Sequence[Label]) -> Sent:
        """Store one batch of labels."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class PendingLabels:
    """Labels ordered by when they are due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Label]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, label: Label) -> None:
        """Hold ``label`` until ``due`` (a clock time)."""
        heapq.heappush(self._heap, (due, next(self._order), label))

    def take_due(self, now: float, limit: int) -> list[Label]:
        """Up to ``limit`` labels due at ``now``, the earliest first."""
        taken: list[Label] = []
        while self._heap and self._heap[0][0] <= now and len(taken) < limit:
            taken.append(heapq.heappop(self._heap)[2])
        return taken

    def drop_all(self) -> int:
        """Forget every label still waiting; returns how many there were."""
        count = len(self._heap)
        self._heap.clear()
        return count


async def send_batch(
    sink: LabelSink, labels: Sequence[Label], pause: Callable[[], Awaitable[None]]
) -> Sent:
    """Send ``labels``, again (after ``pause``) while the failure may pass, up to
    ``SEND_ATTEMPTS`` times."""
    outcome = Sent()
    for _ in range(SEND_ATTEMPTS):
        outcome = await sink.send(labels)
        if outcome.failure is None or not outcome.retryable or outcome.fatal:
            return outcome
        await pause()
    return outcome

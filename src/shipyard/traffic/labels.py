"""Labels waiting for their delay: users drop them here and go on; a sender takes the due
ones in batches, so a user's loop never waits on feedback."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: The first pause after a batch failed for a reason that may pass (a 5xx, a refused
#: connection); it doubles after each failure up to ``BACKOFF_MAX_S`` and resets on a success.
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
#: How long a failing target is still tried once the users are done: after the last label
#: was due (a run that reached its bound) or after the stop (``stop`` drops the labels not
#: due yet); then what is left counts as failed.
LABEL_GRACE_S = 10.0


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

    def take_due(self, now: float, limit: int) -> list[tuple[float, Label]]:
        """Up to ``limit`` labels due at ``now`` with their due times, the earliest first."""
        taken: list[tuple[float, Label]] = []
        while self._heap and self._heap[0][0] <= now and len(taken) < limit:
            due, _, label = heapq.heappop(self._heap)
            taken.append((due, label))
        return taken

    def last_due(self) -> float | None:
        """When the latest waiting label is due; None when none waits."""
        return max(due for due, _, _ in self._heap) if self._heap else None

    def drop_after(self, now: float) -> int:
        """Forget the labels not due at ``now``; returns how many there were."""
        kept = [entry for entry in self._heap if entry[0] <= now]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        return dropped

    def next_due(self) -> float | None:
        """When the earliest waiting label is due; None when none waits."""
        return self._heap[0][0] if self._heap else None

    def drop_all(self) -> int:
        """Forget every label still waiting; returns how many there were."""
        count = len(self._heap)
        self._heap.clear()
        return count


class Backoff:
    """Pauses between attempts at a failing target: ``low`` doubling up to ``high``."""

    def __init__(self, low: float = BACKOFF_MIN_S, high: float = BACKOFF_MAX_S) -> None:
        self.low = low
        self.high = high
        self._next = low

    def pause(self) -> float:
        """The pause before the next attempt (each call doubles the following one)."""
        pause = self._next
        self._next = min(pause * 2, self.high)
        return pause

    def reset(self) -> None:
        """The target answered: the next failure starts again from ``low``."""
        self._next = self.low

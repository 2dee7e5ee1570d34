"""Fakes for the traffic engine: a virtual-time event loop (simulated minutes in
milliseconds), a clock that records its sleeps, a target that answers at once
and a sink that keeps the labels it was sent."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from shipyard.traffic.labels import Label, Sent
from shipyard.traffic.users import Answer, MonotonicClock

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time jumps to the next timer whenever nothing is ready, so a
    run of simulated minutes takes milliseconds and sleeps end exactly when due."""

    def __init__(self) -> None:
        self.virtual = 1000.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.virtual


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self._loop.virtual += timeout
        return ready


def run_virtual(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end on a virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coroutine)


class FakeClock(MonotonicClock):
    """The loop's (virtual) time, recording every sleep asked of it."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


@dataclass
class FakeTarget:
    """Answers every request with a new id; fails the requests named in ``fail_at``."""

    version: str = "1"
    fail_at: set[int] = field(default_factory=set)
    requests: list[tuple[int, bool, int]] = field(default_factory=list)

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        number = len(self.requests)
        self.requests.append((row, drifted, slot))
        await asyncio.sleep(0)
        if number in self.fail_at:
            return Answer(failure="HTTP 503")
        return Answer(id=f"p-{number}", version=self.version)


@dataclass
class FakeSink:
    """Keeps every batch; answers each with ``outcomes`` in turn, then with success."""

    outcomes: list[Sent] = field(default_factory=list)
    batches: list[list[Label]] = field(default_factory=list)

    async def send(self, labels: Sequence[Label]) -> Sent:
        self.batches.append(list(labels))
        return self.outcomes.pop(0) if self.outcomes else Sent()

    async def close(self) -> None:
        return None

    @property
    def labels(self) -> list[Label]:
        return [label for batch in self.batches for label in batch]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

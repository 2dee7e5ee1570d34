"""Fakes for the traffic engine: a virtual-time event loop (simulated minutes in
milliseconds), a clock that records its sleeps, a target that answers at once
and a sink that keeps the labels it was sent; and a real feedback server on 127.0.0.1
that may be down for a while."""

from __future__ import annotations

import asyncio
import json
import selectors
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

from shipyard.traffic.labels import Label, Sent
from shipyard.traffic.users import SENDER_TASK, Answer, MonotonicClock

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
        self.sender_slept: list[float] = []
        """The sleeps of the task that sends the labels (``slept`` has the users')."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        sender = task is not None and task.get_name() == SENDER_TASK
        (self.sender_slept if sender else self.slept).append(seconds)
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


@dataclass
class FeedbackServer:
    """A real HTTP server on 127.0.0.1 taking ``POST /v1/feedback``: it answers 503 until
    ``down_until`` (a ``time.perf_counter`` time), then 200, and keeps when each id came."""

    url: str = ""
    down_until: float = 0.0
    received: dict[str, float] = field(default_factory=dict)
    refused: int = 0


@pytest.fixture
def feedback_server() -> Iterator[FeedbackServer]:
    state = FeedbackServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            now = time.perf_counter()
            with lock:
                down = now < state.down_until
                if down:
                    state.refused += 1
                else:
                    for item in json.loads(body)["feedback"]:
                        state.received.setdefault(item["id"], now)
            answer = b'{"detail": "down for a while"}' if down else b'{"accepted": 1}'
            self.send_response(503 if down else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

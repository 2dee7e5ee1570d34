"""A promoted version reaches running servers without a failed request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from shipyard.data import generate_fraud
from shipyard.registry import Registry
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

from .conftest import FEATURES, LiveServer

SWAP_BOUND_S = 30  # bounds the wait; the measured delay is printed, not asserted


def promote(home: Path, ref: str) -> None:
    with Registry.open(Settings(home=home)) as registry:
        registry.promote(ref, "production", actor="test")


class Load:
    """Threads sending single-row OIP requests until stopped; counts versions and failures."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        row = generate_fraud(threads, seed=5)[FEATURES].to_numpy(np.float32)
        self._bodies = [
            {
                "inputs": [
                    {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": r.tolist()}
                ]
            }
            for r in row
        ]

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(200_000):  # bounded; stop() ends it long before
                if self._stop.is_set():
                    return
                try:
                    response = client.post(
                        f"{self.url}/v2/models/fraud/infer", json=self._bodies[index]
                    )
                except httpx.HTTPError as error:
                    with self._lock:
                        self.failures.append(repr(error))
                    continue
                with self._lock:
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text}")
                        continue
                    version = response.json()["model_version"]
                    self.versions[version] += 1
                    self.first_seen.setdefault(version, time.monotonic())

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def wait_for(self, version: str, bound_s: float) -> None:
        deadline = time.monotonic() + bound_s
        while version not in self.first_seen and time.monotonic() < deadline:
            time.sleep(0.05)

    def count(self) -> int:
        with self._lock:
            return sum(self.versions.values())


def test_swap_under_load_fails_no_request(
    live_server: LiveServer, register_v2: Callable[[Path], None]
) -> None:
    register_v2(live_server.home)
    with Load(live_server.url) as load:
        time.sleep(1.0)
        assert load.count() > 0
        promoted_at = time.monotonic()
        promote(live_server.home, "fraud:2")
        load.wait_for("2", SWAP_BOUND_S)
        time.sleep(0.5)  # traffic after the swap too
    assert load.failures == []
    assert "2" in load.first_seen, f"never saw version 2: {load.versions}"
    print(f"swap visible after {load.first_seen['2'] - promoted_at:.2f} s; {load.versions}")
    # After the swap no request is answered by the old version any more.
    after = httpx.post(
        f"{live_server.url}/v2/models/fraud/infer",
        json={
            "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0] * 30}]
        },
    )
    assert after.json()["model_version"] == "2"


@pytest.mark.parametrize("workers", [2])
def test_every_worker_process_follows_the_alias(
    model_home: Path, tmp_path: Path, workers: int, register_v2: Callable[[Path], None]
) -> None:
    register_v2(model_home)
    settings = Settings(home=model_home)
    with ServerProcess(settings, workers=workers, log=tmp_path / "server.log") as server:
        url = server.url
        with Load(url, threads=6) as load:
            time.sleep(1.0)
            promote(model_home, "fraud:2")
            load.wait_for("2", SWAP_BOUND_S)
            # Each worker polls on its own; give every one a few periods, then sample.
            deadline = time.monotonic() + SWAP_BOUND_S
            while time.monotonic() < deadline:
                before = dict(load.versions)
                time.sleep(2.0)
                if load.versions["1"] == before.get("1", 0):
                    break
        assert load.failures == []
        stale = Counter(
            httpx.post(
                f"{url}/v2/models/fraud/infer",
                json={"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                                   "data": [0] * 30}]},
            ).json()["model_version"]
            for _ in range(40)
        )  # fmt: skip
        assert stale == {"2": 40}

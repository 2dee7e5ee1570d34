"""What ``run_worker`` sets up around a scorer; the workers as processes are tested
against real brokers in ``e2e/test_workers.py``."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import uuid

import pytest

from shipyard.messaging import open_broker
from shipyard.messaging.backends import CLIENT_LOGGERS
from shipyard.registry import Registry
from shipyard.settings import Settings
from shipyard.stream.scorer import ScorerConfig
from shipyard.stream.workers import MATH_THREAD_VARIABLES, serve

from .conftest import MODEL

# Loads scikit-learn's OpenMP only inside the block, as a skops model does after start-up.
LATE_LOAD = """
from threadpoolctl import threadpool_info
from shipyard.settings import Settings
from shipyard.stream.workers import math_threads
with math_threads(Settings().math_threads):
    import sklearn.ensemble  # noqa: F401
    print(max(pool["num_threads"] for pool in threadpool_info()))
"""


def math_threads(**variables: str) -> int:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in MATH_THREAD_VARIABLES and not k.startswith("SHIPYARD_")
    }
    done = subprocess.run(
        [sys.executable, "-c", LATE_LOAD],
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.split()[-1])


def test_a_math_library_loaded_after_start_up_gets_one_thread() -> None:
    assert math_threads() == 1


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell 1 thread from all")
def test_a_thread_count_the_user_chose_is_kept() -> None:
    assert math_threads(OMP_NUM_THREADS="2") == 2


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell 1 thread from all")
def test_the_setting_chooses_the_thread_count() -> None:
    assert math_threads(SHIPYARD_MATH_THREADS="2", OMP_NUM_THREADS="1") == 2


def test_a_running_worker_shows_the_broker_clients_warnings(
    stream_registry: Registry, sqlite_settings: Settings
) -> None:
    """The CLI quiets the clients' logs (a broker down at start is one error line); once the
    worker has connected and loaded its model, their warnings (reconnects) show again."""
    quieted = {name: logging.getLogger(name) for name in CLIENT_LOGGERS}
    before = {name: logger.level for name, logger in quieted.items()}
    levels: dict[str, int] = {}
    config = ScorerConfig(model=MODEL, queue=f"in-{uuid.uuid4().hex[:8]}")

    async def scenario() -> None:
        async def stop_once_running() -> None:
            for _ in range(600):  # bounded: the worker starts within a minute
                if all(logger.level == logging.WARNING for logger in quieted.values()):
                    break
                await asyncio.sleep(0.1)
            levels.update({name: logger.level for name, logger in quieted.items()})
            os.kill(os.getpid(), signal.SIGTERM)  # what stops a worker

        broker = open_broker(f"memory://{uuid.uuid4().hex}")
        watcher = asyncio.ensure_future(stop_once_running())
        await serve(sqlite_settings, config, broker)
        await watcher

    try:
        for logger in quieted.values():
            logger.setLevel(logging.CRITICAL)
        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        for name, logger in quieted.items():
            logger.setLevel(before[name])
    assert levels == dict.fromkeys(CLIENT_LOGGERS, logging.WARNING)


def test_a_running_worker_keeps_its_start_up_objects_out_of_full_collections(
    stream_registry: Registry, sqlite_settings: Settings
) -> None:
    """Frozen once the model is loaded (messages waiting for the prediction log must not make
    every full collection walk the libraries and the model); unfrozen when ``serve`` returns."""
    config = ScorerConfig(model=MODEL, queue=f"in-{uuid.uuid4().hex[:8]}")
    frozen: list[int] = []

    async def scenario() -> None:
        async def stop_once_frozen() -> None:
            for _ in range(600):  # bounded: the worker starts within a minute
                if gc.get_freeze_count():
                    break
                await asyncio.sleep(0.1)
            frozen.append(gc.get_freeze_count())
            os.kill(os.getpid(), signal.SIGTERM)  # what stops a worker

        broker = open_broker(f"memory://{uuid.uuid4().hex}")
        watcher = asyncio.ensure_future(stop_once_frozen())
        await serve(sqlite_settings, config, broker)
        await watcher

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert frozen[0] > 0
    assert gc.get_freeze_count() == 0

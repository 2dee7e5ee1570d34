"""What ``run_worker`` sets up around a scorer; the workers as processes are tested
against real brokers in ``e2e/test_workers.py``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shipyard.stream.workers import MATH_THREAD_VARIABLES

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

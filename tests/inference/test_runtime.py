"""The interpreter's settings for a serving process, and undoing them."""

from __future__ import annotations

import gc
import sys

import pytest

from shipyard.inference.runtime import (
    FULL_COLLECTION_EVERY,
    SWITCH_INTERVAL_S,
    ordinary_runtime,
    serving_runtime,
)


def test_serving_runtime_freezes_start_up_and_ordinary_runtime_undoes_it() -> None:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        serving_runtime()
        assert gc.get_freeze_count() > 0  # start-up's objects are out of every collection
        assert gc.get_threshold() == (*threshold[:2], FULL_COLLECTION_EVERY)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        serving_runtime()  # twice (a test server after a test scorer): undoing still restores
    finally:
        ordinary_runtime()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
    assert sys.getswitchinterval() == interval

"""Episodes: raised once when they start and once when they end, even across failures."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import UnavailableError
from shipyard.monitoring.episodes import Episodes
from shipyard.registry import Registry

from .conftest import MODEL, Watched


class FailingOnce:
    """The monitoring store, but its first ``record_event`` fails as a database outage."""

    def __init__(self, registry: Registry) -> None:
        self.store = registry.monitoring
        self.failures = 1

    def record_event(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("the registry database is down")
        return self.store.record_event(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_an_event_that_failed_to_be_written_is_written_next_cycle(watched: Watched) -> None:
    episodes = Episodes(FailingOnce(watched.registry), MODEL)  # type: ignore[arg-type]
    with pytest.raises(UnavailableError):
        episodes.observe(1, "drift", True, {"share": 1.0})
    assert not episodes.is_open(1, "drift")  # the episode did not start: nothing recorded
    event = episodes.observe(1, "drift", True, {"share": 1.0})  # the retried cycle
    assert event is not None
    assert event.key == "drift.detected:v1:1"
    assert episodes.is_open(1, "drift")
    assert episodes.observe(1, "drift", True, {"share": 1.0}) is None


def test_a_restarted_monitor_finds_the_episode_open(watched: Watched) -> None:
    first = Episodes(watched.registry.monitoring, MODEL)
    first.observe(1, "performance", True, {})
    first.observe(1, "performance", False, {})
    first.observe(1, "performance", True, {})
    again = Episodes(watched.registry.monitoring, MODEL)
    again.load()
    assert again.is_open(1, "performance")
    assert again.observe(1, "performance", True, {}) is None
    event = again.observe(1, "performance", False, {})
    assert event is not None
    assert event.key == "performance.recovered:v1:2"

"""Episodes: a drift or a degradation is raised once when it starts and once when it ends.

The state of each (version, episode kind) is the last of its start and end events in the
registry database, so a monitor that restarts, or takes a model over from another, rebuilds
the same windows, finds the episode already open and raises nothing again. Each event's key
names its episode (``drift.detected:v3:2`` is the second drift episode of version 3): the
store refuses a key it has, so even two monitors racing raise an episode's event once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shipyard.monitoring.paging import pages

if TYPE_CHECKING:
    from shipyard.registry.events import EventRecord
    from shipyard.registry.monitoring import MonitoringStore

Family = Literal["drift", "performance"]

#: Each episode kind's start and end events.
KINDS: dict[Family, tuple[str, str]] = {
    "drift": ("drift.detected", "drift.cleared"),
    "performance": ("performance.degraded", "performance.recovered"),
}
_PAGE = 1000


@dataclass
class _State:
    open: bool = False
    count: int = 0  # episodes started so far


class Episodes:
    """The open episodes of one model's versions, kept in step with its events."""

    def __init__(self, store: MonitoringStore, model: str) -> None:
        self.store = store
        self.model = model
        self._states: dict[tuple[int, Family], _State] = {}

    def load(self) -> None:
        """Read every start and end event of the model, oldest first."""
        self._states.clear()
        for family, (start, end) in KINDS.items():
            events: list[EventRecord] = []
            for kind in (start, end):
                for page in pages(self._events_of(kind), lambda e: e.id, size=_PAGE):
                    events += page
            for event in sorted(events, key=lambda e: e.id):
                if event.version is None:
                    continue
                state = self._states.setdefault((event.version, family), _State())
                if event.kind == start:
                    state.open, state.count = True, state.count + 1
                else:
                    state.open = False

    def _events_of(self, kind: str) -> Callable[[int], list[EventRecord]]:
        return lambda after: self.store.events(self.model, kind=kind, after_id=after, limit=_PAGE)

    def is_open(self, version: int, family: Family) -> bool:
        """Whether an episode of this kind is going on for the version."""
        return self._states.get((version, family), _State()).open

    def observe(
        self, version: int, family: Family, happening: bool | None, evidence: Mapping[str, Any]
    ) -> EventRecord | None:
        """Tell the episode what the windows show now (None: no verdict, nothing changes);
        returns the event recorded when an episode starts or ends (None as well when
        another monitor recorded it first). The state changes only once the event is
        stored: when the store fails, the next cycle sees the same change and records it."""
        state = self._states.setdefault((version, family), _State())
        if happening is None or happening == state.open:
            return None
        start, end = KINDS[family]
        kind = start if happening else end
        count = state.count + 1 if happening else state.count
        event = self.store.record_event(
            self.model, version, kind, f"{kind}:v{version}:{count}", evidence
        )
        state.open, state.count = happening, count
        return event

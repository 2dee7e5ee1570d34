"""After a retrain attempt whose process died (SIGKILL, a lost machine) holding its lock.

The next attempt to take the lock finds the stale attempt (``RetrainLocks.begin``) and
**abandons** it before it retrains afresh: the run it left ``running`` is marked failed; a
candidate it registered (the lock's ``candidate``, or the version tagged with its attempt,
for a kill between registering and recording it) stays registered and is never promoted —
unless its promotion had landed before the kill, in which case that promotion is what
happened and is recorded as such (under the version's key, so once). Whether it landed is
read from the alias history — production moved to the candidate by the attempt's actor
(``retrain_actor``) after it started — not from where production points now: a promotion
rolled back by hand since did happen, and one made by hand was not the retrain's.
Registering is one transaction, so there is never half a version to clean.

All of it happens in the transaction that takes the lock over: the takeover overwrites the
only row naming the stale attempt, so a process killed right after must not be left with
the takeover but no record of what it abandoned. The registry reads the rows
(``Leftovers``); this module names the conventions it reads them by and decides the events
(``ABANDONMENT``), without a registry call of its own.
"""

from __future__ import annotations

from shipyard.monitoring.retraining import ATTEMPT_TAG
from shipyard.registry import DEFAULT_ALIAS
from shipyard.registry.retraining import Abandonment, Leftovers, PlannedEvent


def retrain_actor(attempt: str) -> str:
    """The actor a retrain attempt's alias moves are recorded with."""
    return f"retrain:{attempt}"


def abandonment_events(left: Leftovers) -> list[PlannedEvent]:
    """The events that tell what abandoning a stale attempt found and did."""
    stale, candidate = left.stale, left.candidate
    events: list[PlannedEvent] = []
    if left.promoted:
        resolution = "its candidate was promoted before it stopped"
        evidence = {
            "alias": DEFAULT_ALIAS,
            "to": candidate,
            "attempt": stale.attempt,
            "recovered": True,
        }
        events.append((candidate, "model.promoted", f"model.promoted:v{candidate}", evidence))
    elif candidate is not None:
        resolution = f"v{candidate} stays registered and is never promoted; the retrain runs again"
    else:
        resolution = "it registered no candidate; the retrain runs again"
    evidence = {
        "attempt": stale.attempt,
        "owner": stale.owner,
        "trigger": stale.trigger,
        "started_at": stale.started_at.isoformat(),
        "expired_at": stale.expires_at.isoformat(),
        "run_id": stale.run_id,
        "run": "marked failed" if left.run_failed else None,
        "candidate": candidate,
        "promoted": left.promoted,
        "resolution": resolution,
    }
    events.append((candidate, "retrain.abandoned", f"retrain.abandoned:{stale.attempt}", evidence))
    return events


ABANDONMENT = Abandonment(tag=ATTEMPT_TAG, actor=retrain_actor, events=abandonment_events)
"""How ``PipelineRetrainer`` has ``begin`` abandon a stale attempt."""

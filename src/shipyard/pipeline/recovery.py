"""After a retrain attempt whose process died (SIGKILL, a lost machine) holding its lock.

The next attempt to take the lock gets the stale attempt back (``RetrainLocks.begin``) and
**abandons** it before it retrains afresh: the run it left ``running`` is marked failed; a
candidate it registered (the lock's ``candidate``, or the version tagged with its attempt,
for a kill between registering and recording it) stays registered and is never promoted —
unless its promotion had landed before the kill, in which case that promotion is what
happened and is recorded as such (under the version's key, so once). Registering is one
transaction, so there is never half a version to clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipyard.monitoring.retraining import ATTEMPT_TAG
from shipyard.registry import DEFAULT_ALIAS, ModelRef

if TYPE_CHECKING:
    from shipyard.registry import Registry, RetrainAttempt

Planned = tuple[int | None, str, str, dict[str, Any]]
"""An event to record: (version, kind, what follows the kind in its key, evidence)."""


def abandon(registry: Registry, model: str, stale: RetrainAttempt) -> list[Planned]:
    """Clean up what ``stale`` left; the events that say so."""
    run_note = None
    if stale.run_id is not None and registry.get_run(stale.run_id).status == "running":
        reason = f"abandoned: retrain attempt {stale.attempt} stopped (its lock expired)"
        registry.runs.finish(stale.run_id, "failed", reason)
        run_note = "marked failed"
    candidate = stale.candidate
    if candidate is None:
        tagged = [
            v for v in registry.list_versions(model) if v.tags.get(ATTEMPT_TAG) == stale.attempt
        ]
        candidate = tagged[-1].version if tagged else None
    events: list[Planned] = []
    promoted = False
    if candidate is not None:
        promoted = DEFAULT_ALIAS in registry.get_version(ModelRef(model, candidate, None)).aliases
    if promoted:
        resolution = "its candidate was promoted before it stopped"
        evidence = {
            "alias": DEFAULT_ALIAS,
            "to": candidate,
            "attempt": stale.attempt,
            "recovered": True,
        }
        events.append((candidate, "model.promoted", f"v{candidate}", evidence))
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
        "run": run_note,
        "candidate": candidate,
        "promoted": promoted,
        "resolution": resolution,
    }
    events.append((candidate, "retrain.abandoned", stale.attempt, evidence))
    return events

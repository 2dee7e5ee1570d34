"""Judging a candidate in shadow: the live requests it scored beside production, labelled.

A retrain whose spec says ``gate.shadow: N`` leaves its hold-out winner behind the shadow
alias (``retrain.shadowing``, whose evidence holds N, the production version it must beat
and the deadline). Servers and scorers then score each request with it too, off the response
path, and log those predictions under its version with the request's ids. Each monitor
pass, ``follow_shadow`` joins the log with the feedback since the shadow opened: once N ids
were answered by production, scored by the candidate and labelled, both versions are
judged on exactly those rows with the gate metric (``pipeline/gate.py``) — promoted when
the candidate wins by ``min_delta`` (``model.promoted``), else ``retrain.gated`` (lost); past
the deadline with fewer labels, ``retrain.abandoned``. Either way the shadow alias goes and
the cooldown starts in the same transaction (``RetrainLocks.close_shadow``). Everything it
needs lives in the registry (the alias, the event), so a restarted monitor carries on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shipyard.errors import AliasNotFoundError, InvalidInputError, UnavailableError
from shipyard.monitoring.retraining import GateSpec, RetrainOutcome, Status
from shipyard.monitoring.windows import LogRows
from shipyard.pipeline.gate import as_json, judge
from shipyard.pipeline.labelled import TIME, labels_since
from shipyard.pipeline.spec import parse_spec
from shipyard.registry import DEFAULT_ALIAS, ModelRef

if TYPE_CHECKING:
    from shipyard.data import TableSchema
    from shipyard.monitoring.records import PredictionLog
    from shipyard.registry import EventRecord, ModelVersionInfo, Registry
    from shipyard.registry.retraining import PlannedEvent

logger = logging.getLogger(__name__)

#: The event that opens a shadow (keyed ``retrain.shadowing:<attempt>``).
SHADOWING = "retrain.shadowing"


def follow_shadow(
    registry: Registry, log: PredictionLog, model: str, now: datetime
) -> RetrainOutcome | None:
    """Judge the model's candidate in shadow if it can be; None when none is open."""
    shadow = registry.retraining.shadow(model)
    if shadow is None:
        return None
    candidate = registry.get_version(ModelRef(model, shadow[0]))
    opened = _opening(registry, model, candidate.version, shadow[1])
    if opened is None:  # moved there by hand: nothing says what to judge it on
        reason = f"{candidate.ref} is in shadow without a {SHADOWING} event (moved by hand?)"
        return _close(registry, model, candidate, None, "abandoned", reason, reason)
    evidence = opened.evidence
    needed, expected = int(evidence["labelled"]), int(evidence["production"])
    deadline = datetime.fromisoformat(str(evidence["deadline"]))
    try:
        production = registry.get_version(ModelRef(model, None, DEFAULT_ALIAS))
    except AliasNotFoundError:
        production = None
    if production is None or production.version != expected:
        now_at = "none" if production is None else f"v{production.version}"
        reason = (
            f"production moved from v{expected} to {now_at} while {candidate.ref} was in "
            "shadow, so what it was to beat is gone"
        )
        return _close(registry, model, candidate, None, "abandoned", reason, reason)
    spec_text = registry.runs.spec_text(candidate.run_id) if candidate.run_id else None
    if spec_text is None:
        reason = f"{candidate.ref} has no run, so no spec to judge it with"
        return _close(registry, model, candidate, None, "abandoned", reason, reason)
    try:
        spec = parse_spec(
            spec_text, source=f"the spec of {candidate.ref}", data_file=Path("labelled.csv")
        )
        schema = spec.data.table_schema()
        found = shadow_rows(
            registry,
            log,
            model,
            candidate.version,
            expected,
            schema,
            opened.at,
            needed,
            both_classes=spec.task == "classification",
        )
        rows = found.rows
        # One class only cannot rank anything (the metric is undefined): not judged.
        one_class = (
            rows is not None and spec.task == "classification" and rows[schema.target].nunique() < 2
        )
        if rows is None or one_class:
            have = found.have(needed) + (" (the first of one class)" * one_class)
            if now < deadline:
                reason = f"{candidate.ref} in shadow: {have}"
                return RetrainOutcome(model, "shadowing", reason, candidate.version)
            reason = (
                f"{candidate.ref} had {have} by {deadline:%Y-%m-%d %H:%M:%S} UTC; it stays "
                "registered, unpromoted"
            )
            return _close(registry, model, candidate, None, "abandoned", reason, reason)
        gate = GateSpec(metric=evidence.get("metric"), min_delta=float(evidence["min_delta"]))
        verdict = judge(registry, spec, gate, production, candidate, rows, shadow=needed)
    except UnavailableError:
        raise  # the database or the log is away: try again next pass
    except Exception as error:  # the candidate cannot be judged: it is never promoted
        logger.exception("judging %s in shadow failed", candidate.ref)
        reason = f"{candidate.ref} could not be judged in shadow: {type(error).__name__}: {error}"
        return _close(
            registry, model, candidate, None, "failed", reason, None, [_failed(candidate, reason)]
        )
    gated = (candidate.version, "retrain.gated", f"retrain.gated:shadow:v{candidate.version}")
    planned: list[PlannedEvent] = [(*gated, as_json(verdict.evidence))]
    if not verdict.won:
        reason = f"{candidate.ref} lost the gate in shadow: {verdict.comparison}"
        return _close(registry, model, candidate, None, "lost", reason, None, planned)
    promoted = {
        "alias": DEFAULT_ALIAS,
        "from": expected,
        "to": candidate.version,
        "attempt": evidence.get("attempt"),
        "gate": verdict.comparison,
        "shadow": True,
    }
    kind = "model.promoted"
    planned.append((candidate.version, kind, f"{kind}:v{candidate.version}", promoted))
    reason = f"{candidate.ref} promoted to {DEFAULT_ALIAS} after its shadow: {verdict.comparison}"
    return _close(registry, model, candidate, expected, "promoted", reason, None, planned)


@dataclass(frozen=True)
class ShadowRows:
    """What the shadow has to be judged on so far."""

    labels: int
    """Labels received since the shadow opened."""
    joined: int | None
    """Ids both versions scored with a label (None: not counted, too few labels)."""
    rows: pd.DataFrame | None
    """The first N of them in time order, with features, label and ``TIME``; None until
    there are N."""

    def have(self, needed: int) -> str:
        """How far the shadow is, in words."""
        if self.joined is None:
            return f"{self.labels:,} labels since it opened, of the {needed:,} it needs"
        return f"{self.joined:,} of {needed:,} labelled rows"


def shadow_rows(
    registry: Registry,
    log: PredictionLog,
    model: str,
    candidate: int,
    production: int,
    schema: TableSchema,
    since: datetime,
    needed: int,
    *,
    both_classes: bool = False,
) -> ShadowRows:
    """The first ``needed`` ids (in time order) the candidate scored and production answered
    since ``since`` (the shadow's opening) and that got a label since: the candidate's
    logged features (one row per id), the label, and ``TIME``; the log is read only once
    there are that many labels.

    ``both_classes``: if the first ``needed`` labels are all of one class (rare fraud in a
    few hundred rows), the rows run on to the first row of another class, so the verdict
    waits for labels that can rank rather than for a deadline."""
    truth = labels_since(registry, model, since)
    if len(truth) < needed:  # fewer labels than rows needed: the log cannot have enough
        return ShadowRows(len(truth), None, None)
    assert schema.target is not None
    names = tuple(schema.feature_names)
    # Production's record of a request is written before the shadow's: both are read from
    # the shadow's opening, so its first requests count too.
    answered = _ids(log.scan(model, version=production, since=since).get(production))
    scored = log.scan(model, version=candidate, since=since).get(candidate)
    if scored is None or not len(scored) or not answered:
        return ShadowRows(len(truth), 0, None)
    rows = LogRows.from_table(scored)
    wanted = np.fromiter(
        (i in truth and i in answered for i in rows.ids), dtype=bool, count=len(rows)
    )
    ids, times = rows.ids[wanted], rows.times[wanted]
    order = np.argsort(times, kind="stable")
    ids, times = ids[order], times[order]
    _, first = np.unique(ids, return_index=True)  # a redelivered request counts once
    keep = np.sort(first)
    if len(keep) < needed:
        return ShadowRows(len(truth), len(keep), None)
    count = needed
    if both_classes:
        labels = [truth[i] for i in ids[keep]]
        other = next((n for n, label in enumerate(labels) if label != labels[0]), None)
        count = len(keep) if other is None else max(needed, other + 1)
    chosen = np.flatnonzero(wanted)[order][keep[:count]]
    features = rows.aligned(names)[chosen]
    ids, times = ids[keep[:count]], times[keep[:count]]
    frame = pd.DataFrame(features.astype(np.float64), columns=list(names))
    frame[schema.target] = pd.Series([truth[i] for i in ids], dtype=object)
    try:
        frame = schema.validate_frame(frame, require_target=True)
    except InvalidInputError as error:
        raise InvalidInputError(f"the labelled shadow rows do not fit the spec: {error}") from error
    frame[TIME] = times
    return ShadowRows(len(truth), len(keep), frame)


def _ids(table: Any) -> set[str]:
    if table is None or not len(table):
        return set()
    return {str(i) for i in table.column("id").to_pylist()}


def _opening(registry: Registry, model: str, candidate: int, moved: datetime) -> EventRecord | None:
    """The ``retrain.shadowing`` event that opened this shadow of ``candidate``: recorded
    with the alias move (``moved``), so an older one (of an earlier shadow) does not count."""
    for event in registry.monitoring.events(
        model, kind=SHADOWING, newest_first=True, limit=1, since=moved
    ):
        if event.version == candidate:
            return event
    return None


def _close(
    registry: Registry,
    model: str,
    candidate: ModelVersionInfo,
    promote_over: int | None,
    status: Status,
    reason: str,
    abandoned: str | None,
    planned: list[PlannedEvent] | None = None,
) -> RetrainOutcome:
    """End the shadow with its events; a shadow someone else ended meanwhile is left be."""
    events = list(planned or [])
    if abandoned is not None:
        key = f"retrain.abandoned:shadow:v{candidate.version}"
        evidence = {"candidate": candidate.version, "reason": abandoned, "shadow": True}
        events.append((candidate.version, "retrain.abandoned", key, evidence))
    closed, recorded = registry.retraining.close_shadow(
        model,
        candidate.version,
        promote_over=promote_over,
        actor=f"shadow:v{candidate.version}",
        events=events,
    )
    if closed == "gone":  # another judge (or a person) ended it first: nothing to do
        reason = f"the shadow of {candidate.ref} was ended already (by another monitor, or by hand)"
        return RetrainOutcome(model, "skipped", reason, candidate.version)
    if closed == "moved":  # production moved between the verdict and the promotion
        failed = (
            f"{candidate.ref} won in shadow but was not promoted: {model}@{DEFAULT_ALIAS} is no "
            f"longer v{promote_over}, which it was judged against"
        )
        return _close(
            registry, model, candidate, None, "failed", failed, None, [_failed(candidate, failed)]
        )
    logger.info("%s: shadow of v%d ended %s", model, candidate.version, status)
    return RetrainOutcome(model, status, reason, candidate.version, recorded)


def _failed(candidate: ModelVersionInfo, reason: str) -> PlannedEvent:
    """The ``retrain.failed`` event of a shadow that ends unjudged or unpromoted."""
    key = f"retrain.failed:shadow:v{candidate.version}"
    return (candidate.version, "retrain.failed", key, {"reason": reason, "shadow": True})

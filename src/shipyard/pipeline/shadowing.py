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
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shipyard.errors import (
    AliasNotFoundError,
    ConflictError,
    InvalidInputError,
    UnavailableError,
)
from shipyard.monitoring.paging import pages
from shipyard.monitoring.retraining import GateSpec, RetrainOutcome, Status
from shipyard.monitoring.windows import EPOCH, LogRows
from shipyard.pipeline.gate import as_json, judge
from shipyard.pipeline.labelled import FEEDBACK_PAGE, TIME
from shipyard.pipeline.spec import parse_spec
from shipyard.registry import DEFAULT_ALIAS, SHADOW_ALIAS, ModelRef

if TYPE_CHECKING:
    from shipyard.data import TableSchema
    from shipyard.monitoring.records import PredictionLog
    from shipyard.registry import EventRecord, ModelVersionInfo, Registry
    from shipyard.registry.retraining import PlannedEvent

logger = logging.getLogger(__name__)

#: The event that opens a shadow (keyed ``retrain.shadowing:v<candidate>``).
SHADOWING = "retrain.shadowing"


def follow_shadow(
    registry: Registry, log: PredictionLog, model: str, now: datetime
) -> RetrainOutcome | None:
    """Judge the model's candidate in shadow if it can be; None when none is open."""
    try:
        candidate = registry.get_version(ModelRef(model, None, SHADOW_ALIAS))
    except AliasNotFoundError:
        return None
    opened = _opening(registry, model, candidate.version)
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
        rows = shadow_rows(registry, log, model, candidate.version, expected, schema, opened.at)
        # One class only cannot rank anything (the metric is undefined): wait for more.
        enough = len(rows) >= needed
        one_class = enough and spec.task == "classification" and rows[schema.target].nunique() < 2
        if not enough or one_class:
            have = f"{len(rows):,} of {needed:,} labelled rows" + (", one class" * one_class)
            if now < deadline:
                reason = f"{candidate.ref} in shadow: {have}"
                return RetrainOutcome(model, "shadowing", reason, candidate.version)
            reason = (
                f"{candidate.ref} had {len(rows):,} labelled live rows of the {needed:,} its "
                f"shadow needs{' (of one class)' * one_class} by "
                f"{deadline:%Y-%m-%d %H:%M:%S} UTC; it stays registered, unpromoted"
            )
            return _close(registry, model, candidate, None, "abandoned", reason, reason)
        gate = GateSpec(metric=evidence.get("metric"), min_delta=float(evidence["min_delta"]))
        verdict = judge(registry, spec, gate, production, candidate, rows, shadow=True)
    except UnavailableError:
        raise  # the database or the log is away: try again next pass
    except Exception as error:  # the candidate cannot be judged: it is never promoted
        logger.exception("judging %s in shadow failed", candidate.ref)
        reason = f"{candidate.ref} could not be judged in shadow: {type(error).__name__}: {error}"
        key = f"retrain.failed:shadow:v{candidate.version}"
        failed: list[PlannedEvent] = [
            (candidate.version, "retrain.failed", key, {"reason": reason, "shadow": True})
        ]
        return _close(registry, model, candidate, None, "failed", reason, None, failed)
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


def shadow_rows(
    registry: Registry,
    log: PredictionLog,
    model: str,
    candidate: int,
    production: int,
    schema: TableSchema,
    since: datetime,
) -> pd.DataFrame:
    """The labelled rows (labels received since ``since``) both versions predicted, oldest
    first: the candidate's logged features (one row per id), the label, and ``TIME``."""
    truth: dict[str, str] = {}
    for page in pages(
        lambda after: registry.monitoring.feedback_after(
            model, after, limit=FEEDBACK_PAGE, since=since
        ),
        lambda record: record.seq,
        size=FEEDBACK_PAGE,
    ):
        for record in page:
            truth.setdefault(record.id, record.label)
    assert schema.target is not None
    names = tuple(schema.feature_names)
    empty = pd.DataFrame({**{n: [] for n in names}, schema.target: [], TIME: []})
    if not truth:
        return empty
    # The candidate was never served before its shadow: all its rows are the shadow's. Its
    # record of a request is written after production's, so production's rows go back no
    # further than the candidate's first.
    scored = log.scan(model, version=candidate).get(candidate)
    if scored is None or not len(scored):
        return empty
    rows = LogRows.from_table(scored)
    earliest = EPOCH + timedelta(microseconds=int(rows.times.min()))
    answered = _ids(log.scan(model, version=production, since=earliest).get(production))
    if not answered:
        return empty
    wanted = np.fromiter(
        (i in truth and i in answered for i in rows.ids), dtype=bool, count=len(rows)
    )
    ids, times, features = rows.ids[wanted], rows.times[wanted], rows.aligned(names)[wanted]
    order = np.argsort(times, kind="stable")
    ids, times, features = ids[order], times[order], features[order]
    _, first = np.unique(ids, return_index=True)  # a redelivered request counts once
    keep = np.sort(first)
    ids, times, features = ids[keep], times[keep], features[keep]
    frame = pd.DataFrame(features.astype(np.float64), columns=list(names))
    frame[schema.target] = pd.Series([truth[i] for i in ids], dtype=object)
    try:
        frame = schema.validate_frame(frame, require_target=True)
    except InvalidInputError as error:
        raise InvalidInputError(f"the labelled shadow rows do not fit the spec: {error}") from error
    frame[TIME] = times
    return frame


def _ids(table: Any) -> set[str]:
    if table is None or not len(table):
        return set()
    return {str(i) for i in table.column("id").to_pylist()}


def _opening(registry: Registry, model: str, candidate: int) -> EventRecord | None:
    """The ``retrain.shadowing`` event of ``candidate`` (the newest, should there be more)."""
    for event in registry.monitoring.events(model, kind=SHADOWING, newest_first=True, limit=20):
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
    try:
        registry.retraining.close_shadow(
            model,
            candidate.version,
            promote_over=promote_over,
            actor=f"shadow:v{candidate.version}",
            events=events,
        )
    except ConflictError as error:
        if promote_over is None:
            return RetrainOutcome(model, "skipped", str(error), candidate.version)
        # Production moved between the verdict and the promotion: not promoted, but ended.
        failed = f"{candidate.ref} won in shadow but was not promoted: {error}"
        key = f"retrain.failed:shadow:v{candidate.version}"
        return _close(
            registry,
            model,
            candidate,
            None,
            "failed",
            failed,
            None,
            [(candidate.version, "retrain.failed", key, {"reason": failed, "shadow": True})],
        )
    recorded = [
        e
        for e in registry.monitoring.events(model, newest_first=True, limit=len(events))
        if e.version == candidate.version
    ][::-1]
    logger.info("%s: shadow of v%d ended %s", model, candidate.version, status)
    return RetrainOutcome(model, status, reason, candidate.version, recorded)

"""Loop events in the registry database: each raised once per model and key.

An event tells something the loop found or did (``drift.detected``, ``retrain.gated``,
``model.promoted``…) with its evidence. Its ``key`` is unique per model, so a restarted
monitor never tells — or does — the same thing twice. ``add_event`` inserts one in the
caller's transaction, so it commits with what it tells of (an alias move, a shadow's end);
``MonitoringStore.record_event`` and ``events`` (``registry/monitoring.py``) are the store's
own short transactions around ``insert_event`` and ``select_events``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.registry.tables import MonitoringEventRow, utcnow


@dataclass(frozen=True)
class EventRecord:
    """Something the monitor found, with its evidence; raised once per ``key``."""

    id: int
    model: str
    version: int | None
    kind: str
    key: str
    at: datetime
    evidence: dict[str, Any]


def add_event(
    session: Session,
    model_id: int,
    model: str,
    version: int | None,
    kind: str,
    key: str,
    evidence: dict[str, Any],
) -> EventRecord:
    """Insert an event in the caller's transaction (so it commits with what it tells of,
    such as an alias move); the key must be new for the model."""
    row = MonitoringEventRow(
        model_id=model_id, version=version, kind=kind, key=key, at=utcnow(), evidence=evidence
    )
    session.add(row)
    session.flush()
    return _event(model, row)


def insert_event(
    session: Session,
    model_id: int,
    model: str,
    version: int | None,
    kind: str,
    key: str,
    evidence: dict[str, Any],
) -> EventRecord | None:
    """``add_event`` unless the model has an event with ``key`` already (then None)."""
    exists = session.scalar(
        select(MonitoringEventRow.id).where(
            MonitoringEventRow.model_id == model_id, MonitoringEventRow.key == key
        )
    )
    if exists is not None:
        return None
    return add_event(session, model_id, model, version, kind, key, evidence)


def select_events(
    session: Session,
    model_id: int,
    model: str,
    *,
    kind: str | None,
    after_id: int,
    limit: int,
    newest_first: bool,
    since: datetime | None,
    until: datetime | None,
) -> list[EventRecord]:
    """Up to ``limit`` events of the model with an id above ``after_id`` (of ``kind``,
    recorded in ``[since, until)``, when given), oldest first or ``newest_first``."""
    query = select(MonitoringEventRow).where(
        MonitoringEventRow.model_id == model_id, MonitoringEventRow.id > after_id
    )
    if kind is not None:
        query = query.where(MonitoringEventRow.kind == kind)
    if since is not None:
        query = query.where(MonitoringEventRow.at >= since)
    if until is not None:
        query = query.where(MonitoringEventRow.at < until)
    order = MonitoringEventRow.id.desc() if newest_first else MonitoringEventRow.id
    return [_event(model, row) for row in session.scalars(query.order_by(order).limit(limit))]


def _event(model: str, row: MonitoringEventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        model=model,
        version=row.version,
        kind=row.kind,
        key=row.key,
        at=row.at,
        evidence=row.evidence,
    )

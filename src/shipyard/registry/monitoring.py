"""What monitoring keeps in the registry database: feedback, leases, events, snapshots, cursors.

Ground truth (``add_feedback``) arrives from the server, the CLI and a broker queue; the
monitor reads it in ``seq`` order (``feedback_after``), says how each label joined its
prediction (``settle_feedback``), owns a model by a lease, raises each event once (its
``key`` is unique per model) and keeps its latest state per version and how far it has read
its inputs, so a restarted monitor carries on where the last one stopped. A registry hands
out its store as ``Registry.monitoring``; each call runs in its own short transaction. The
events' queries and record are in ``registry/events.py``.

A monitor writes through ``held_by(owner)``: that store's writes of a model's state
(statuses, snapshots, cursors, events, expiry) check, in the same transaction and with the
lease row locked, that ``owner`` still holds an unexpired lease, and raise
``LeaseLostError`` otherwise — so a monitor that stalled past its lease never moves a cursor
back or overwrites the new owner's snapshot.

Snapshots keep the latest state; ``history`` keeps compact points of them over time
(written with a cycle, ``commit_cycle(history=...)``; read by version and time range;
``expire_history`` removes the old ones).

Feedback totals live in ``monitoring_counters`` (``accepted``, ``duplicate`` and one per
status), kept in step as rows are stored and settled, so reading them costs nothing however
many rows there are, and settled rows can be deleted (``expire_feedback``) without losing
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, cast, get_args

from sqlalchemy import ColumnElement, CursorResult, Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shipyard.errors import InvalidInputError, LeaseLostError
from shipyard.registry.checks import check_json
from shipyard.registry.database import retrying
from shipyard.registry.events import EventRecord, insert_event, select_events
from shipyard.registry.queries import find_model
from shipyard.registry.runs import Transactions
from shipyard.registry.tables import (
    FeedbackRow,
    MonitoringCounterRow,
    MonitoringCursorRow,
    MonitoringHistoryRow,
    MonitoringLeaseRow,
    MonitoringSnapshotRow,
    utcnow,
)

FeedbackStatus = Literal["pending", "joined", "unknown", "late"]
FEEDBACK_STATUSES: tuple[FeedbackStatus, ...] = get_args(FeedbackStatus)
FEEDBACK_SOURCES = ("http", "file", "queue")
MAX_ID_LENGTH = 200
"""The longest prediction id stored (the column's width)."""

_CHUNK = 500  # ids per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits
_EXPIRE_BATCH = 5_000  # rows deleted per statement by expire_feedback
_MAX_EXPIRE_BATCHES = 10_000
_DUPLICATES = "duplicate"
_ACCEPTED = "accepted"
_FEEDBACK = cast(Table, FeedbackRow.__table__)
_COUNTERS = cast(Table, MonitoringCounterRow.__table__)
_HISTORY = cast(Table, MonitoringHistoryRow.__table__)
T = TypeVar("T")


@dataclass(frozen=True)
class FeedbackReceipt:
    """What became of a batch of feedback."""

    received: int
    """Items in the batch."""
    accepted: int
    """Items stored now."""
    duplicates: list[str]
    """Ids already stored for this model, or repeated in the batch: not stored again."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One stored label of one prediction."""

    seq: int
    model: str
    id: str
    label: str
    received_at: datetime
    source: str
    status: FeedbackStatus


@dataclass(frozen=True)
class HistoryPoint:
    """One version's monitoring at one time, as the monitor chose to keep it."""

    version: int
    at: datetime
    point: dict[str, Any]


class MonitoringStore:
    """Feedback, leases, events, snapshots and cursors of monitored models."""

    def __init__(self, transaction: Transactions, *, holder: str | None = None) -> None:
        self._transaction = transaction
        self.holder = holder
        """The lease owner whose writes this store makes (None: no lease is checked)."""

    def held_by(self, owner: str) -> MonitoringStore:
        """This store, writing a model's state only while ``owner`` holds its lease."""
        _check_owner(owner)
        return MonitoringStore(self._transaction, holder=owner)

    # -- feedback -------------------------------------------------------------------------

    def add_feedback(
        self, model: str, items: Sequence[tuple[str, str]], *, source: str
    ) -> FeedbackReceipt:
        """Store ``(prediction id, label)`` pairs; ids already known are reported, not stored.

        The model must exist (``ModelNotFoundError``). Every pair is checked before anything
        is stored, so a bad one refuses the whole batch. The rows of one batch take their
        ``seq`` in id order, not in the batch's order.
        """
        if source not in FEEDBACK_SOURCES:
            raise InvalidInputError(
                f"feedback source {source!r} is not one of {', '.join(FEEDBACK_SOURCES)}"
            )
        pairs = _check_pairs(items)

        def work(session: Session) -> FeedbackReceipt:
            model_id = find_model(session, model).id
            now = utcnow()
            rows: dict[str, dict[str, Any]] = {}  # the first label of an id wins
            for prediction_id, label in pairs:
                rows.setdefault(
                    prediction_id,
                    {
                        "model_id": model_id,
                        "prediction_id": prediction_id,
                        "label": label,
                        "received_at": now,
                        "source": source,
                        "status": "pending",
                    },
                )
            # In id order: two batches that share ids then wait for each other, never deadlock.
            stored = _insert_new(session, [rows[i] for i in sorted(rows)]) if rows else set()
            taken: set[str] = set()
            duplicates: list[str] = []
            for prediction_id, _ in pairs:
                if prediction_id in stored and prediction_id not in taken:
                    taken.add(prediction_id)
                else:
                    duplicates.append(prediction_id)
            changes = {_DUPLICATES: len(duplicates), _ACCEPTED: len(stored), "pending": len(stored)}
            _add_to_counters(session, model_id, changes)
            return FeedbackReceipt(len(pairs), len(stored), duplicates)

        return self._retrying(work)

    def feedback_after(
        self,
        model: str,
        seq: int,
        *,
        limit: int = 10_000,
        status: FeedbackStatus | None = None,
        since: datetime | None = None,
    ) -> list[FeedbackRecord]:
        """Up to ``limit`` labels of ``model`` with a ``seq`` above ``seq``, in ``seq`` order
        (of one ``status``, received at or after ``since``, when given)."""
        _check_count(limit, "limit")
        if status is not None:
            _check_status(status)
        if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
            raise InvalidInputError(
                f"since must be a timezone-aware datetime, not {since!r}; e.g. "
                "datetime.now(UTC) - timedelta(hours=1)"
            )
        with self._transaction() as session:
            model_id = find_model(session, model).id
            query = select(
                FeedbackRow.seq,
                FeedbackRow.prediction_id,
                FeedbackRow.label,
                FeedbackRow.received_at,
                FeedbackRow.source,
                FeedbackRow.status,
            ).where(FeedbackRow.model_id == model_id)
            if status is not None:
                query = query.where(FeedbackRow.status == status)
            if since is not None:
                query = query.where(FeedbackRow.received_at >= since)
            rows = session.execute(
                query.where(FeedbackRow.seq > seq).order_by(FeedbackRow.seq).limit(limit)
            )
            return [
                FeedbackRecord(number, model, prediction_id, label, at, source, cast(Any, state))
                for number, prediction_id, label, at, source, state in rows
            ]

    def settle_feedback(self, model: str, statuses: Mapping[str, FeedbackStatus]) -> None:
        """Set the status of stored labels, by prediction id; unknown ids are ignored."""
        by_status = _by_status(statuses)
        with self._transaction(write=True) as session:
            model_id = find_model(session, model).id
            self._hold(session, model_id, model)
            _settle(session, model_id, by_status)

    def feedback_counts(self, model: str) -> dict[str, int]:
        """Totals since the start: ``accepted``, ``duplicate`` and one per status (the
        ``pending`` total is what waits now). Read from the counters: no row is counted."""
        with self._transaction() as session:
            model_id = find_model(session, model).id
            counts = dict.fromkeys((_ACCEPTED, _DUPLICATES, *FEEDBACK_STATUSES), 0)
            for name, value in session.execute(
                select(MonitoringCounterRow.name, MonitoringCounterRow.value).where(
                    MonitoringCounterRow.model_id == model_id
                )
            ):
                counts[name] = int(value)
            return counts

    def expire_feedback(self, model: str, before: datetime) -> int:
        """Delete the settled labels of ``model`` received before ``before`` (pending ones
        stay); their counts stay in the totals. Returns the rows deleted."""
        removed = 0
        for _ in range(_MAX_EXPIRE_BATCHES):
            with self._transaction(write=True) as session:
                model_id = find_model(session, model).id
                self._hold(session, model_id, model)
                seqs = list(
                    session.scalars(
                        select(FeedbackRow.seq)
                        .where(
                            FeedbackRow.model_id == model_id,
                            FeedbackRow.received_at < before,
                            FeedbackRow.status != "pending",
                        )
                        .limit(_EXPIRE_BATCH)
                    )
                )
                if seqs:
                    session.execute(delete(FeedbackRow).where(FeedbackRow.seq.in_(seqs)))
            removed += len(seqs)
            if len(seqs) < _EXPIRE_BATCH:
                break
        return removed

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(self, model: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease on ``model`` for ``ttl_seconds``; False if another holds it.

        The lease is free when no one holds it or its holder let it expire. Taking it is one
        conditional UPDATE (or the INSERT of its row), so two processes never both get it.
        Expiry is judged by the clocks of the processes, which must roughly agree.
        """
        _check_owner(owner)
        if not (isinstance(ttl_seconds, int | float) and math.isfinite(ttl_seconds)):
            raise InvalidInputError(f"a lease lasts a number of seconds, not {ttl_seconds!r}")
        if ttl_seconds <= 0:
            raise InvalidInputError(f"a lease lasts more than 0 seconds, not {ttl_seconds}")
        now = utcnow()
        expires = now + timedelta(seconds=ttl_seconds)
        try:
            with self._transaction(write=True) as session:
                model_id = find_model(session, model).id
                result = session.execute(
                    update(MonitoringLeaseRow)
                    .where(
                        MonitoringLeaseRow.model_id == model_id,
                        or_(
                            MonitoringLeaseRow.owner == owner,
                            MonitoringLeaseRow.expires_at <= now,
                        ),
                    )
                    .values(owner=owner, expires_at=expires)
                    .execution_options(synchronize_session=False)
                )
                if cast(CursorResult[Any], result).rowcount == 1:
                    return True
                held = session.scalar(
                    select(MonitoringLeaseRow.model_id).where(
                        MonitoringLeaseRow.model_id == model_id
                    )
                )
                if held is not None:
                    return False
                session.add(MonitoringLeaseRow(model_id=model_id, owner=owner, expires_at=expires))
                session.flush()
                return True
        except IntegrityError:
            return False  # another process inserted the lease row first: it holds the lease

    def release_lease(self, model: str, owner: str) -> None:
        """Give up the lease on ``model`` if ``owner`` holds it."""
        with self._transaction(write=True) as session:
            model_id = find_model(session, model).id
            session.execute(
                delete(MonitoringLeaseRow).where(
                    MonitoringLeaseRow.model_id == model_id, MonitoringLeaseRow.owner == owner
                )
            )

    def lease(self, model: str) -> tuple[str, datetime] | None:
        """Who last took the lease on ``model`` and when it expires (maybe in the past)."""
        with self._transaction() as session:
            model_id = find_model(session, model).id
            row = session.get(MonitoringLeaseRow, model_id)
            return None if row is None else (row.owner, row.expires_at)

    # -- events ---------------------------------------------------------------------------

    def record_event(
        self,
        model: str,
        version: int | None,
        kind: str,
        key: str,
        evidence: Mapping[str, Any],
    ) -> EventRecord | None:
        """Record an event unless one with ``key`` exists for ``model`` (then None)."""
        _check_text(kind, "event kind", 100)
        _check_text(key, "event key", 300)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise InvalidInputError(f"an event's version is a number or None, not {version!r}")
        document = dict(evidence)
        check_json(document, "event evidence")
        try:
            with self._transaction(write=True) as session:
                model_id = find_model(session, model).id
                self._hold(session, model_id, model)
                return insert_event(session, model_id, model, version, kind, key, document)
        except IntegrityError:
            return None  # another process recorded the same key first

    def events(
        self,
        model: str,
        *,
        kind: str | None = None,
        after_id: int = 0,
        limit: int = 100,
        newest_first: bool = False,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[EventRecord]:
        """Up to ``limit`` events of ``model`` with an id above ``after_id``, oldest first
        (``newest_first``: the latest ``limit`` of them, newest first); only those recorded
        at or after ``since`` and before ``until``, when given."""
        _check_count(limit, "limit")
        _check_range(since, until)
        with self._transaction() as session:
            model_id = find_model(session, model).id
            return select_events(
                session,
                model_id,
                model,
                kind=kind,
                after_id=after_id,
                limit=limit,
                newest_first=newest_first,
                since=since,
                until=until,
            )

    # -- the monitor's state --------------------------------------------------------------

    def save_snapshot(self, model: str, version: int, snapshot: Mapping[str, Any]) -> None:
        """Replace the monitor's latest state of one version of ``model``."""
        document = dict(snapshot)
        check_json(document, "monitoring snapshot")

        def work(session: Session) -> None:
            model_id = find_model(session, model).id
            self._hold(session, model_id, model)
            _put_snapshot(session, model_id, version, document)

        self._retrying(work)

    def snapshots(self, model: str) -> dict[int, dict[str, Any]]:
        """The latest state of every version of ``model`` the monitor has saved, by version."""
        with self._transaction() as session:
            model_id = find_model(session, model).id
            rows = session.scalars(
                select(MonitoringSnapshotRow)
                .where(MonitoringSnapshotRow.model_id == model_id)
                .order_by(MonitoringSnapshotRow.version)
            )
            return {row.version: row.snapshot for row in rows}

    def save_cursor(self, model: str, name: str, cursor: Mapping[str, Any]) -> None:
        """Replace how far the monitor has read its input ``name`` (e.g. "log") for ``model``."""
        _check_text(name, "cursor name", 64)
        document = dict(cursor)
        check_json(document, "monitoring cursor")

        def work(session: Session) -> None:
            model_id = find_model(session, model).id
            self._hold(session, model_id, model)
            _put_cursor(session, model_id, name, document)

        self._retrying(work)

    def commit_cycle(
        self,
        model: str,
        *,
        statuses: Mapping[str, FeedbackStatus],
        cursors: Mapping[str, Mapping[str, Any]],
        snapshots: Mapping[int, Mapping[str, Any]],
        history: Sequence[HistoryPoint] = (),
    ) -> None:
        """One monitor cycle's writes, all or none, in one transaction: the feedback
        ``statuses`` (as ``settle_feedback``), the ``cursors`` by name (as ``save_cursor``),
        the ``snapshots`` by version (as ``save_snapshot``) and the ``history`` points to
        add.

        A monitor saves with them the totals those statuses and rows produced (as cursors),
        so that what the store says was read and joined is exactly what was counted: a
        monitor killed, or refused by the database, between two of these writes would
        otherwise count rows or labels twice, or never, after its restart.
        """
        by_status = _by_status(statuses)
        cursor_documents: dict[str, dict[str, Any]] = {}
        for name, cursor in cursors.items():
            _check_text(name, "cursor name", 64)
            cursor_documents[name] = dict(cursor)
            check_json(cursor_documents[name], "monitoring cursor")
        snapshot_documents: dict[int, dict[str, Any]] = {}
        for version, snapshot in snapshots.items():
            if not isinstance(version, int) or isinstance(version, bool):
                raise InvalidInputError(f"a snapshot's version is a number, not {version!r}")
            snapshot_documents[version] = dict(snapshot)
            check_json(snapshot_documents[version], "monitoring snapshot")
        points = [_check_point(point) for point in history]

        def work(session: Session) -> None:
            model_id = find_model(session, model).id
            self._hold(session, model_id, model)
            _settle(session, model_id, by_status)
            for name, document in sorted(cursor_documents.items()):
                _put_cursor(session, model_id, name, document)
            for version, document in sorted(snapshot_documents.items()):
                _put_snapshot(session, model_id, version, document)
            session.add_all(
                MonitoringHistoryRow(
                    model_id=model_id, version=point.version, at=point.at, point=point.point
                )
                for point in points
            )
            session.flush()

        self._retrying(work)

    def history(
        self,
        model: str,
        version: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
        spread: bool = False,
    ) -> list[HistoryPoint]:
        """Up to ``limit`` history points of one version of ``model`` taken at or after
        ``since`` and before ``until`` (when given), oldest first: the latest ``limit`` of
        them or, with ``spread``, every k-th of them from the newest on, with the smallest k
        that keeps them to ``limit`` (a chart of a long range then spans all of it)."""
        _check_count(limit, "limit")
        with self._transaction() as session:
            where = self._history_where(session, model, version, since, until)
            if spread:
                total = session.scalar(
                    select(func.count()).select_from(MonitoringHistoryRow).where(*where)
                )
                stride = -(-int(total or 0) // limit)
                if stride > 1:
                    numbered = (
                        select(
                            MonitoringHistoryRow.id,
                            func.row_number()
                            .over(order_by=(_HISTORY.c.at.desc(), _HISTORY.c.id.desc()))
                            .label("n"),
                        )
                        .where(*where)
                        .subquery()
                    )
                    chosen = select(numbered.c.id).where((numbered.c.n - 1) % stride == 0)
                    where = [MonitoringHistoryRow.id.in_(chosen)]
            rows = session.scalars(
                select(MonitoringHistoryRow)
                .where(*where)
                .order_by(MonitoringHistoryRow.at.desc(), MonitoringHistoryRow.id.desc())
                .limit(limit)
            ).all()
            return [HistoryPoint(row.version, row.at, row.point) for row in reversed(rows)]

    def history_count(
        self,
        model: str,
        version: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many history points of one version of ``model`` a time range holds."""
        with self._transaction() as session:
            where = self._history_where(session, model, version, since, until)
            total = session.scalar(
                select(func.count()).select_from(MonitoringHistoryRow).where(*where)
            )
            return int(total or 0)

    @staticmethod
    def _history_where(
        session: Session,
        model: str,
        version: int,
        since: datetime | None,
        until: datetime | None,
    ) -> list[ColumnElement[bool]]:
        """The conditions selecting one version's history points in a time range."""
        _check_range(since, until)
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidInputError(f"a version is a number, not {version!r}")
        model_id = find_model(session, model).id
        where = [MonitoringHistoryRow.model_id == model_id, MonitoringHistoryRow.version == version]
        if since is not None:
            where.append(MonitoringHistoryRow.at >= since)
        if until is not None:
            where.append(MonitoringHistoryRow.at < until)
        return where

    def expire_history(self, model: str, before: datetime) -> int:
        """Delete the history points of ``model`` taken before ``before``; the rows deleted."""
        _check_range(before, None)
        removed = 0
        for _ in range(_MAX_EXPIRE_BATCHES):
            with self._transaction(write=True) as session:
                model_id = find_model(session, model).id
                self._hold(session, model_id, model)
                ids = list(
                    session.scalars(
                        select(MonitoringHistoryRow.id)
                        .where(
                            MonitoringHistoryRow.model_id == model_id,
                            MonitoringHistoryRow.at < before,
                        )
                        .limit(_EXPIRE_BATCH)
                    )
                )
                if ids:
                    session.execute(
                        delete(MonitoringHistoryRow).where(MonitoringHistoryRow.id.in_(ids))
                    )
            removed += len(ids)
            if len(ids) < _EXPIRE_BATCH:
                break
        return removed

    def cursor(self, model: str, name: str) -> dict[str, Any] | None:
        """The cursor last saved as ``name`` for ``model``, if any."""
        with self._transaction() as session:
            model_id = find_model(session, model).id
            return session.scalar(
                select(MonitoringCursorRow.cursor).where(
                    MonitoringCursorRow.model_id == model_id, MonitoringCursorRow.name == name
                )
            )

    # -- plumbing -------------------------------------------------------------------------

    def _retrying(self, work: Callable[[Session], T]) -> T:
        return retrying(self._transaction, work)

    def _hold(self, session: Session, model_id: int, model: str) -> None:
        """Refuse the write unless ``holder`` holds an unexpired lease on the model; the
        lease row stays locked to the end of the transaction, so no one takes it meanwhile."""
        if self.holder is None:
            return
        held = session.scalar(
            select(MonitoringLeaseRow.model_id)
            .where(
                MonitoringLeaseRow.model_id == model_id,
                MonitoringLeaseRow.owner == self.holder,
                MonitoringLeaseRow.expires_at > utcnow(),
            )
            .with_for_update()
        )
        if held is None:
            raise LeaseLostError(
                f"{self.holder} no longer holds the lease on {model!r} (it expired or another "
                "monitor took it); nothing was written — let the model go"
            )


# -- helpers --------------------------------------------------------------------------------


def _dialect_insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, for the session's database."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the feedback rows whose id is new for the model; the ids inserted.

    ON CONFLICT DO NOTHING is one index probe per row and safe against a concurrent writer;
    a SELECT of the known ids first was 15x slower on PostgreSQL, whose planner (before
    ANALYZE) scanned every row of the model for each IN list.
    """
    statement = (
        _dialect_insert(session, _FEEDBACK)
        .on_conflict_do_nothing(index_elements=["model_id", "prediction_id"])
        .returning(_FEEDBACK.c.prediction_id)
    )
    return set(session.scalars(statement, rows))


def _by_status(statuses: Mapping[str, FeedbackStatus]) -> dict[str, list[str]]:
    """The prediction ids to set to each status (each status checked)."""
    by_status: dict[str, list[str]] = {}
    for prediction_id, new in statuses.items():
        _check_status(new)
        by_status.setdefault(new, []).append(prediction_id)
    return by_status


def _settle(session: Session, model_id: int, by_status: Mapping[str, list[str]]) -> None:
    """Set the status of stored labels; the counters move with them."""
    changes: dict[str, int] = {}
    for status, ids in sorted(by_status.items()):
        for chunk in _chunks(ids):
            # The rows' current statuses, locked: the counters move with them.
            moved = session.execute(
                select(FeedbackRow.prediction_id, FeedbackRow.status)
                .where(
                    FeedbackRow.model_id == model_id,
                    FeedbackRow.prediction_id.in_(chunk),
                    FeedbackRow.status != status,
                )
                .with_for_update()
            ).all()
            if not moved:
                continue
            for _, old in moved:
                changes[old] = changes.get(old, 0) - 1
            changes[status] = changes.get(status, 0) + len(moved)
            session.execute(
                update(FeedbackRow)
                .where(
                    FeedbackRow.model_id == model_id,
                    FeedbackRow.prediction_id.in_([pid for pid, _ in moved]),
                )
                .values(status=status)
                .execution_options(synchronize_session=False)
            )
    _add_to_counters(session, model_id, changes)


def _put_cursor(session: Session, model_id: int, name: str, document: dict[str, Any]) -> None:
    row = session.scalar(
        select(MonitoringCursorRow).where(
            MonitoringCursorRow.model_id == model_id, MonitoringCursorRow.name == name
        )
    )
    if row is None:
        session.add(
            MonitoringCursorRow(model_id=model_id, name=name, cursor=document, updated_at=utcnow())
        )
    else:
        row.cursor = document
        row.updated_at = utcnow()
    session.flush()


def _put_snapshot(session: Session, model_id: int, version: int, document: dict[str, Any]) -> None:
    row = session.scalar(
        select(MonitoringSnapshotRow).where(
            MonitoringSnapshotRow.model_id == model_id,
            MonitoringSnapshotRow.version == version,
        )
    )
    if row is None:
        session.add(
            MonitoringSnapshotRow(
                model_id=model_id, version=version, snapshot=document, updated_at=utcnow()
            )
        )
    else:
        row.snapshot = document
        row.updated_at = utcnow()
    session.flush()


def _add_to_counters(session: Session, model_id: int, changes: Mapping[str, int]) -> None:
    """Add each amount to the model's counter of that name (made at 0 when missing)."""
    for name, amount in sorted(changes.items()):  # a fixed order: writers never deadlock
        if not amount:
            continue
        insert = _dialect_insert(session, _COUNTERS)
        session.execute(
            insert.values(model_id=model_id, name=name, value=amount).on_conflict_do_update(
                index_elements=["model_id", "name"],
                set_={"value": _COUNTERS.c.value + insert.excluded.value},
            )
        )


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _check_pairs(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate(items):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise InvalidInputError(
                f"feedback item {position} must be a (prediction id, label) pair, not {item!r}"
            )
        prediction_id, label = item
        _check_text(prediction_id, f"prediction id of feedback item {position}", MAX_ID_LENGTH)
        if not isinstance(label, str):
            raise InvalidInputError(
                f"the label of feedback item {position} (id {prediction_id!r}) must be text, "
                f"not {type(label).__name__}"
            )
        pairs.append((prediction_id, label))
    return pairs


def _check_text(value: object, what: str, longest: int) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"the {what} must be a non-empty string, not {value!r}")
    if len(value) > longest:
        raise InvalidInputError(
            f"the {what} is {len(value)} characters long; at most {longest} are stored"
        )


def _check_owner(owner: object) -> None:
    _check_text(owner, "lease owner", 200)


def _check_status(status: object) -> None:
    if status not in FEEDBACK_STATUSES:
        raise InvalidInputError(
            f"feedback status {status!r} is not one of {', '.join(FEEDBACK_STATUSES)}"
        )


def _check_point(point: object) -> HistoryPoint:
    if not isinstance(point, HistoryPoint):
        raise InvalidInputError(f"a history point is a HistoryPoint, not {point!r}")
    if not isinstance(point.version, int) or isinstance(point.version, bool):
        raise InvalidInputError(f"a history point's version is a number, not {point.version!r}")
    _check_range(point.at, None)
    check_json(point.point, "monitoring history point")
    return point


def _check_range(since: object, until: object) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidInputError(
                f"{name} must be a timezone-aware datetime, not {value!r}; e.g. "
                "datetime.now(UTC) - timedelta(hours=1)"
            )


def _check_count(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"the {what} must be a positive whole number, not {value!r}")

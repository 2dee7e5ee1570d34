"""Retrain locks: at most one retrain per model in flight, a cooldown between them, and
a promotion that only the attempt holding the lock can make, only from the version it
judged against.

One row per model (``retrain_locks``). ``begin`` takes it in one transaction, with the row
locked: refused while another attempt is in flight (unfinished, its lease ahead) or while
the cooldown after the last finished attempt runs; an attempt that expired unfinished (its
process died) is *stale*: ``begin`` takes the row over and, in the same transaction,
abandons what it left (``Abandonment``: its run marked failed, its candidate found, the
events that tell of it) — so a process killed right after never loses the record of the
stale attempt, whose row the takeover overwrites. The holder renews
the lease (``renew``) while it works. A registry hands out its locks as
``Registry.retraining``; each call runs in its own short transaction.

A candidate that must first run in shadow (``retrain.gate.shadow``) gets the shadow alias
with its ``retrain.shadowing`` event (``open_shadow``, while the attempt holds the lock);
whoever judges the shadow later ends it (``close_shadow``): promoted or not, the alias goes,
the verdict's events are recorded and the cooldown starts, all in one transaction — so a
monitor killed at any point leaves either an open shadow or a settled one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipyard.errors import ConflictError, InvalidInputError, ShipyardError
from shipyard.registry.database import retrying
from shipyard.registry.events import EventRecord, add_event, insert_event
from shipyard.registry.queries import find_model, move_alias, resolve
from shipyard.registry.reference import DEFAULT_ALIAS, SHADOW_ALIAS, ModelRef, check_name
from shipyard.registry.runs import Transactions
from shipyard.registry.tables import (
    AliasEventRow,
    AliasRow,
    ModelVersionRow,
    RetrainLockRow,
    RunRow,
    TagRow,
    utcnow,
)

logger = logging.getLogger(__name__)

PlannedEvent = tuple[int | None, str, str, dict[str, Any]]
"""An event to record with a change: (version, kind, key, evidence)."""

IN_FLIGHT = "in flight"
COOLDOWN = "cooldown"
SHADOW = "shadow"

#: What ``close_shadow`` did: ended the shadow, or found it ``gone`` (ended by another
#: judge or by hand: nothing changed), or production ``moved`` off the version the
#: candidate was judged against (nothing changed).
Closed = Literal["closed", "gone", "moved"]


@dataclass(frozen=True)
class RetrainAttempt:
    """One retrain attempt of a model, as its lock row records it."""

    model: str
    attempt: str
    owner: str
    trigger: str
    started_at: datetime
    expires_at: datetime
    run_id: str | None
    candidate: int | None
    finished_at: datetime | None
    outcome: str | None
    cooled_at: datetime | None

    def in_flight(self, now: datetime) -> bool:
        """Unfinished and its holder's lease still ahead."""
        return self.finished_at is None and self.expires_at > now

    def stale(self, now: datetime) -> bool:
        """Unfinished, and its holder stopped renewing it (it died)."""
        return self.finished_at is None and self.expires_at <= now


@dataclass(frozen=True)
class Begun:
    """What ``begin`` did: took the lock (``attempt``), or ``refused`` it and why."""

    attempt: RetrainAttempt | None
    refused: str | None = None
    """``in flight``, ``cooldown`` or ``shadow`` (a candidate is in shadow, unjudged)."""
    blocking: RetrainAttempt | None = None
    """The attempt in flight, or the last finished one (cooldown)."""
    until: datetime | None = None
    """When the cooldown ends."""
    stale: RetrainAttempt | None = None
    """An attempt that died unfinished, whose lock this one took over."""
    shadow: int | None = None
    """The version in shadow (refused ``shadow``)."""
    abandoned: tuple[EventRecord, ...] = ()
    """The events that told of abandoning ``stale``, recorded with the takeover."""


@dataclass(frozen=True)
class Leftovers:
    """What a stale attempt left, as ``begin`` found it in the transaction taking its lock."""

    stale: RetrainAttempt
    run_failed: bool
    """Its run was still ``running``; ``begin`` marked it failed."""
    candidate: int | None
    """The version it registered: the lock's, else the newest tagged with its attempt (a
    kill between registering and recording it)."""
    promoted: bool
    """Its promotion of the candidate landed before it stopped: production moved to the
    candidate by the attempt's actor between its start and the takeover (whether or not
    production still points there)."""


@dataclass(frozen=True)
class Abandonment:
    """How ``begin`` abandons a stale attempt, in the transaction that takes its lock over.

    The registry reads and changes rows; the caller names its conventions and decides what
    the events say (``pipeline/recovery.py``), with no registry call of its own.
    """

    tag: str
    """The version tag whose value is the attempt that registered the version."""
    actor: Callable[[str], str]
    """The actor an attempt's alias moves are recorded with (``promote``'s ``actor``)."""
    events: Callable[[Leftovers], Sequence[PlannedEvent]]
    """The events to record (each key whole; one already recorded is skipped)."""


class RetrainLocks:
    """The retrain lock of each model in the registry database."""

    def __init__(self, transaction: Transactions) -> None:
        self._transaction = transaction

    def begin(
        self,
        model: str,
        *,
        attempt: str,
        owner: str,
        trigger: str,
        ttl_seconds: float,
        cooldown_seconds: float | None = None,
        abandon: Abandonment | None = None,
    ) -> Begun:
        """Take the model's lock for a new ``attempt`` unless one is in flight or (with
        ``cooldown_seconds``) the last finished attempt ended less than that long ago, or
        while a candidate is in shadow (its judging ends that retrain); a stale attempt is
        abandoned (``abandon``) in the same transaction."""
        check_name(model)
        _check_text(attempt, "attempt", 32)
        _check_text(owner, "owner", 200)
        _check_text(trigger, "trigger", 300)
        _check_seconds(ttl_seconds, "lease")
        if cooldown_seconds is not None:
            _check_seconds(cooldown_seconds, "cooldown", zero=True)

        def work(session: Session) -> Begun:
            model_id = find_model(session, model).id
            row = session.get(RetrainLockRow, model_id, with_for_update=True)
            now = utcnow()
            previous = None if row is None else _attempt(model, row)
            if previous is not None and previous.in_flight(now):
                return Begun(None, IN_FLIGHT, previous)
            # Checked under the lock row: a shadow opens only while its attempt holds it.
            shadow = _alias_version(session, model_id, SHADOW_ALIAS)
            if shadow is not None:
                return Begun(None, SHADOW, previous, shadow=shadow)
            if previous is not None and previous.cooled_at is not None and cooldown_seconds:
                until = previous.cooled_at + timedelta(seconds=cooldown_seconds)
                if until > now:
                    return Begun(None, COOLDOWN, previous, until)
            values = {
                "attempt": attempt,
                "owner": owner,
                "trigger": trigger,
                "started_at": now,
                "expires_at": now + timedelta(seconds=ttl_seconds),
                "run_id": None,
                "candidate": None,
                "finished_at": None,
                "outcome": None,
            }
            if row is None:
                row = RetrainLockRow(model_id=model_id, cooled_at=None, **values)
                session.add(row)
            else:
                for name, value in values.items():
                    setattr(row, name, value)
            stale = previous if previous is not None and previous.stale(now) else None
            recorded: list[EventRecord] = []
            if stale is not None and abandon is not None:
                left = _leftovers(session, model_id, stale, abandon, now)
                for version, kind, key, evidence in abandon.events(left):
                    event = insert_event(session, model_id, model, version, kind, key, evidence)
                    if event is not None:  # else recorded already (by the stale attempt)
                        recorded.append(event)
            session.flush()
            return Begun(_attempt(model, row), stale=stale, abandoned=tuple(recorded))

        return retrying(self._transaction, work)

    def renew(self, model: str, attempt: str, ttl_seconds: float) -> bool:
        """Extend the lease of ``attempt``; False when it is no longer the model's attempt
        in flight (it finished, or another took the lock over after it expired)."""
        _check_seconds(ttl_seconds, "lease")
        with self._transaction(write=True) as session:
            row = _held(session, model, attempt)
            if row is None:
                return False
            row.expires_at = utcnow() + timedelta(seconds=ttl_seconds)
            return True

    def progress(
        self, model: str, attempt: str, *, run_id: str | None = None, candidate: int | None = None
    ) -> None:
        """Record the run and the candidate of the attempt holding the lock; a lost lock is
        a ``ConflictError``."""
        with self._transaction(write=True) as session:
            row = _held(session, model, attempt)
            if row is None:
                raise _lost(model, attempt)
            if run_id is not None:
                row.run_id = run_id
            if candidate is not None:
                row.candidate = candidate

    def finish(self, model: str, attempt: str, outcome: str, *, cool: bool = True) -> bool:
        """Mark the attempt finished (``cool``: the cooldown starts now); False when the
        lock is no longer its own."""
        _check_text(outcome, "outcome", 32)
        with self._transaction(write=True) as session:
            row = _held(session, model, attempt, expired_too=True)
            if row is None:
                return False
            now = utcnow()
            row.finished_at, row.outcome = now, outcome
            if cool:
                row.cooled_at = now
            return True

    def promote(
        self, model: str, attempt: str, version: int, alias: str, *, expected: int, actor: str
    ) -> None:
        """Point ``alias`` at ``version``, in one transaction with two checks: ``attempt``
        still holds the lock, and the alias still points at ``expected`` (the version the
        candidate was judged against). Either failing is a ``ConflictError``; nothing moves."""
        check_name(alias, "alias")

        def work(session: Session) -> None:
            # The model row first, as registering and promoting lock it: no deadlock.
            model_row, version_row = resolve(session, ModelRef(model, version), lock=True)
            row = _held(session, model, attempt)
            if row is None:
                raise _lost(model, attempt)
            current = _alias_version(session, model_row.id, alias)
            if current != expected:
                raise ConflictError(
                    f"{model}@{alias} is v{current} now, not v{expected}, which {model}:"
                    f"{version} was judged against; it was not promoted"
                )
            move_alias(session, model_row, alias, version_row, actor)
            row.candidate = version

        retrying(self._transaction, work)

    def open_shadow(
        self,
        model: str,
        attempt: str,
        version: int,
        *,
        actor: str,
        event: PlannedEvent,
    ) -> EventRecord:
        """Point the shadow alias at ``version``, record ``event`` (returned) and mark the
        attempt finished (outcome ``shadowing``; its cooldown starts once the shadow is
        judged), in one transaction and only while ``attempt`` holds the lock and no other
        version is in shadow (else ``ConflictError``; nothing moves)."""

        def work(session: Session) -> EventRecord:
            model_row, version_row = resolve(session, ModelRef(model, version), lock=True)
            row = _held(session, model, attempt)
            if row is None:
                raise _lost(model, attempt)
            current = _alias_version(session, model_row.id, SHADOW_ALIAS)
            if current is not None and current != version:
                raise ConflictError(
                    f"{model}@{SHADOW_ALIAS} is v{current}, in shadow already; {model}:{version} "
                    "does not replace it before it is judged"
                )
            move_alias(session, model_row, SHADOW_ALIAS, version_row, actor)
            row.candidate = version
            # Finished here, not by a later call: a process killed in between would leave
            # an unfinished lock that the next retrain abandons as if it had died.
            row.finished_at, row.outcome = utcnow(), "shadowing"
            return add_event(session, model_row.id, model, *event)

        return retrying(self._transaction, work)

    def close_shadow(
        self,
        model: str,
        candidate: int,
        *,
        promote_over: int | None,
        actor: str,
        events: Sequence[PlannedEvent],
    ) -> tuple[Closed, list[EventRecord]]:
        """End the shadow of ``candidate`` in one transaction: the shadow alias goes, with
        ``promote_over`` production moves from that version to the candidate, the events
        are recorded (returned) and the model's cooldown starts. Each event's key gets the
        id of the alias move that opened this shadow, so the same version put in shadow
        again (by hand, or a retry) is judged again. A shadow alias no longer at the
        candidate is ``gone``, production no longer at ``promote_over`` is ``moved``; then
        nothing changes."""

        def work(session: Session) -> tuple[Closed, list[EventRecord]]:
            model_row, version_row = resolve(session, ModelRef(model, candidate), lock=True)
            shadow = session.scalar(
                select(AliasRow)
                .where(AliasRow.model_id == model_row.id, AliasRow.alias == SHADOW_ALIAS)
                .with_for_update()
            )
            if shadow is None or shadow.version_id != version_row.id:
                return "gone", []
            if promote_over is not None:
                current = _alias_version(session, model_row.id, DEFAULT_ALIAS)
                if current != promote_over:
                    return "moved", []
                move_alias(session, model_row, DEFAULT_ALIAS, version_row, actor)
            opening = _opening_move(session, model_row.id, shadow)
            session.delete(shadow)
            lock = session.get(RetrainLockRow, model_row.id, with_for_update=True)
            if lock is not None and lock.finished_at is not None:
                lock.cooled_at = utcnow()
            recorded = [
                add_event(session, model_row.id, model, version, kind, f"{key}:{opening}", doc)
                for version, kind, key, doc in events
            ]
            return "closed", recorded

        return retrying(self._transaction, work)

    def shadow(self, model: str) -> tuple[int, datetime] | None:
        """The version in shadow and when the alias moved there; None when none is."""
        with self._transaction() as session:
            model_id = find_model(session, model).id
            version = _alias_version(session, model_id, SHADOW_ALIAS)
            if version is None:
                return None
            moved = session.scalar(
                select(AliasEventRow.at)
                .where(AliasEventRow.model_id == model_id, AliasEventRow.alias == SHADOW_ALIAS)
                .order_by(AliasEventRow.id.desc())
                .limit(1)
            )
            return version, moved or utcnow()

    def get(self, model: str) -> RetrainAttempt | None:
        """The model's latest attempt (in flight, finished or stale), if any."""
        with self._transaction() as session:
            model_id = find_model(session, model).id
            row = session.get(RetrainLockRow, model_id)
            return None if row is None else _attempt(model, row)

    def holding(self, model: str, attempt: str, ttl_seconds: float) -> Holding:
        """A context that renews the attempt's lease every third of ``ttl_seconds``, from a
        thread, while the block runs (``lost`` once a renewal found the lock gone)."""
        return Holding(self, model, attempt, ttl_seconds)

    def last_started(self, model: str) -> datetime | None:
        """When the model's latest attempt started."""
        latest = self.get(model)
        return None if latest is None else latest.started_at


class Holding:
    """Renews an attempt's lease while a block runs (``RetrainLocks.holding``)."""

    def __init__(self, locks: RetrainLocks, model: str, attempt: str, ttl: float) -> None:
        _check_seconds(ttl, "lease")
        self._locks, self._model, self._attempt, self._ttl = locks, model, attempt, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"retrain-lock-{model}", daemon=True)
        self.lost = False

    def __enter__(self) -> Holding:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            try:
                if not self._locks.renew(self._model, self._attempt, self._ttl):
                    self.lost = True
                    return
            except ShipyardError as error:  # the next renewal tries again
                logger.warning("could not renew the retrain lock of %s: %s", self._model, error)


def _held(
    session: Session, model: str, attempt: str, *, expired_too: bool = False
) -> RetrainLockRow | None:
    """The model's lock row, locked, if ``attempt`` holds it unfinished (and unexpired)."""
    model_id = find_model(session, model).id
    row = session.get(RetrainLockRow, model_id, with_for_update=True)
    if row is None or row.attempt != attempt or row.finished_at is not None:
        return None
    if not expired_too and row.expires_at <= utcnow():
        return None
    return row


def _leftovers(
    session: Session, model_id: int, stale: RetrainAttempt, abandon: Abandonment, now: datetime
) -> Leftovers:
    """Find what ``stale`` left and mark its run failed, in the caller's transaction."""
    run = None if stale.run_id is None else session.get(RunRow, stale.run_id)
    run_failed = run is not None and run.status == "running"
    if run is not None and run_failed:
        run.status, run.finished_at = "failed", now
        run.error = f"abandoned: retrain attempt {stale.attempt} stopped (its lock expired)"
    candidate = stale.candidate
    if candidate is None:
        candidate = session.scalar(
            select(ModelVersionRow.version)
            .join(TagRow, TagRow.version_id == ModelVersionRow.id)
            .where(
                ModelVersionRow.model_id == model_id,
                TagRow.key == abandon.tag,
                TagRow.value == stale.attempt,
            )
            .order_by(ModelVersionRow.version.desc())
            .limit(1)
        )
    # From the alias history, not where the alias points now: a promotion rolled back by
    # hand since still happened, and a promotion by hand was not the attempt's.
    promotion = (
        None
        if candidate is None
        else session.scalar(
            select(AliasEventRow.id)
            .where(
                AliasEventRow.model_id == model_id,
                AliasEventRow.alias == DEFAULT_ALIAS,
                AliasEventRow.to_version == candidate,
                AliasEventRow.actor == abandon.actor(stale.attempt),
                AliasEventRow.at >= stale.started_at,
                AliasEventRow.at <= now,
            )
            .limit(1)
        )
    )
    return Leftovers(stale, run_failed, candidate, promotion is not None)


def _alias_version(session: Session, model_id: int, alias: str) -> int | None:
    return session.scalar(
        select(ModelVersionRow.version)
        .join(AliasRow, AliasRow.version_id == ModelVersionRow.id)
        .where(AliasRow.model_id == model_id, AliasRow.alias == alias)
    )


def _opening_move(session: Session, model_id: int, shadow: AliasRow) -> str:
    """What names the opening of the shadow ``shadow`` points at: the alias move that put
    it there (every move is recorded), else the alias row (new each time it is created)."""
    move = session.scalar(
        select(AliasEventRow.id)
        .where(AliasEventRow.model_id == model_id, AliasEventRow.alias == SHADOW_ALIAS)
        .order_by(AliasEventRow.id.desc())
        .limit(1)
    )
    return f"move:{move}" if move is not None else f"alias:{shadow.id}"


def _lost(model: str, attempt: str) -> ConflictError:
    return ConflictError(
        f"retrain attempt {attempt} of {model!r} no longer holds the model's retrain lock "
        "(its lease expired and another attempt took over); it changes nothing more"
    )


def _attempt(model: str, row: RetrainLockRow) -> RetrainAttempt:
    return RetrainAttempt(
        model=model,
        attempt=row.attempt,
        owner=row.owner,
        trigger=row.trigger,
        started_at=row.started_at,
        expires_at=row.expires_at,
        run_id=row.run_id,
        candidate=row.candidate,
        finished_at=row.finished_at,
        outcome=row.outcome,
        cooled_at=row.cooled_at,
    )


def _check_text(value: object, what: str, longest: int) -> None:
    if not isinstance(value, str) or not value or len(value) > longest:
        raise InvalidInputError(
            f"a retrain {what} is a non-empty string of at most {longest} characters, not {value!r}"
        )


def _check_seconds(value: object, what: str, *, zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):  # type: ignore[operator]
        raise InvalidInputError(
            f"a retrain {what} lasts a positive number of seconds, not {value!r}"
        )

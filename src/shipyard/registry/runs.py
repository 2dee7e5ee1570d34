"""Pipeline runs: their parameters, each stage's outcome, metrics, the data they trained on.

A run is the lineage of the versions it registers (``ModelVersionInfo.run_id``). ``Runs``
records and reads them in the registry database; a registry hands out its own as
``Registry.runs``. Each call runs in its own short transaction.

Stage workers (``shipyard.pipeline.workers``) run a run's stages in separate processes:
``claim_stage`` takes a stage for one worker under a lease (or says it is done, held by a
live worker, or that the run has ended), ``renew_stage`` extends the lease while it runs,
``end_stage`` records its outcome only while the worker still holds it (else
``LeaseLostError``), and ``release_stage`` lets a redelivered event take it at once. The
decision is made with the run's row locked (PostgreSQL ``FOR UPDATE``; SQLite writes one
transaction at a time), so two workers never both hold a stage.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shipyard import __version__
from shipyard.errors import ConflictError, InvalidInputError, LeaseLostError, NotFoundError
from shipyard.registry.checks import check_json, check_metrics
from shipyard.registry.records import RunInfo, StageClaim, StageInfo
from shipyard.registry.tables import RunLearnerRow, RunMetricRow, RunRow, RunStageRow, utcnow


class Transactions(Protocol):
    """Opens one transaction on the registry database (``Registry.transaction``)."""

    def __call__(self, *, write: bool = False) -> AbstractContextManager[Session]: ...


class Runs:
    """Runs in the registry database: started, their stages and metrics recorded, finished."""

    def __init__(self, transaction: Transactions) -> None:
        self._transaction = transaction

    def start(
        self,
        spec_name: str,
        spec_text: str,
        params: dict[str, Any],
        dataset_sha256: str | None = None,
        *,
        status: Literal["running", "queued"] = "running",
    ) -> str:
        """Record a new run, running or queued (to be started by another process with
        ``reopen``); returns its id."""
        check_json(params, "run params")
        if status not in ("running", "queued"):
            raise InvalidInputError(f"a run starts 'running' or 'queued', not {status!r}")
        run_id = uuid.uuid4().hex
        with self._transaction(write=True) as session:
            session.add(
                RunRow(
                    id=run_id,
                    spec_name=spec_name,
                    spec_text=spec_text,
                    status=status,
                    params=params,
                    dataset_sha256=dataset_sha256,
                    package_version=__version__,
                    started_at=utcnow(),
                )
            )
        return run_id

    def reopen(self, run_id: str) -> RunInfo:
        """Mark a queued or failed run running again (its stages so far are kept); returns
        it as it was. A running or succeeded run is refused with ``ConflictError``."""
        with self._transaction(write=True) as session:
            run = find_run(session, run_id)
            if run.status not in ("queued", "failed"):
                raise ConflictError(
                    f"run {run_id} is {run.status}; only a queued or failed run can be "
                    "started or resumed (`shipyard runs show` shows its state)"
                )
            info = run_infos(session, [run])[0]
            run.status = "running"
            run.error = None
            run.finished_at = None
        return info

    def recent(self, spec_name: str | None = None, *, limit: int = 50) -> list[RunInfo]:
        """The newest runs first, of one spec or of all."""
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        with self._transaction() as session:
            query = select(RunRow).order_by(RunRow.started_at.desc(), RunRow.id).limit(limit)
            if spec_name is not None:
                query = query.where(RunRow.spec_name == spec_name)
            return run_infos(session, list(session.scalars(query)))

    def record_stage(
        self,
        run_id: str,
        name: str,
        status: str,
        started_at: datetime,
        duration_s: float,
        error: str | None = None,
    ) -> None:
        """Append a stage's outcome to a run."""
        if started_at.tzinfo is None:
            raise InvalidInputError("started_at must be timezone-aware, e.g. datetime.now(UTC)")
        with self._transaction(write=True) as session:
            find_run(session, run_id)
            count = session.scalar(
                select(func.count()).select_from(RunStageRow).where(RunStageRow.run_id == run_id)
            )
            session.add(
                RunStageRow(
                    run_id=run_id,
                    position=(count or 0) + 1,
                    name=name,
                    status=status,
                    started_at=started_at,
                    duration_s=float(duration_s),
                    error=error,
                )
            )

    def claim_stage(self, run_id: str, name: str, worker: str, lease_s: float) -> StageClaim:
        """Take stage ``name`` of run ``run_id`` for ``worker`` for ``lease_s`` seconds.

        ``done`` when the stage succeeded before (its outputs are returned), ``busy`` while
        another start of it holds an unexpired lease, ``finished`` once the run has ended;
        else the stage is recorded running (a start whose worker let its lease expire is
        taken over, one attempt more) and a queued run becomes running."""
        _check_lease(lease_s)
        with self._transaction(write=True) as session:
            run = session.get(RunRow, run_id, with_for_update=True)
            if run is None:
                raise NotFoundError(f"no run with id {run_id!r} in this registry")
            return _claim(session, run, name, worker, lease_s)

    def renew_stage(self, stage_id: int, worker: str, lease_s: float) -> bool:
        """Extend ``worker``'s lease on a running stage; False if it no longer holds it."""
        with self._transaction(write=True) as session:
            result = session.execute(
                update(RunStageRow)
                .where(
                    RunStageRow.id == stage_id,
                    RunStageRow.worker == worker,
                    RunStageRow.status == "running",
                )
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    def end_stage(
        self,
        stage_id: int,
        worker: str,
        status: Literal["succeeded", "failed"],
        duration_s: float,
        *,
        outputs: Mapping[str, Any] | None = None,
        error: str | None = None,
        last: bool = False,
        claim_next: str | None = None,
        lease_s: float = 0.0,
        dataset_sha256: str | None = None,
    ) -> StageClaim | None:
        """Record how a claimed stage ended; ``LeaseLostError`` if ``worker`` lost it (its
        lease expired and another worker took the stage over). In the same transaction:
        with ``last`` (it was the run's last stage), a success also marks the run succeeded
        unless it ended already; with ``claim_next``, a success also claims that stage for
        ``worker`` for ``lease_s`` seconds, as ``claim_stage`` would, and returns the claim;
        ``dataset_sha256`` records the data the run reads (``set_dataset``)."""
        if outputs is not None:
            check_json(dict(outputs), "stage outputs")
        if claim_next is not None:
            _check_lease(lease_s)
        with self._transaction(write=True) as session:
            # The run's row first, then the stage's, in the order claim_stage locks them.
            run_id = session.scalar(select(RunStageRow.run_id).where(RunStageRow.id == stage_id))
            run = session.get(RunRow, run_id, with_for_update=True) if run_id else None
            row = session.get(RunStageRow, stage_id, with_for_update=True)
            if run is None or row is None or row.worker != worker or row.status != "running":
                raise LeaseLostError(
                    f"{worker} no longer holds stage {stage_id}: its lease expired and another "
                    "worker took the stage over (raise SHIPYARD_STAGE_LEASE_SECONDS if the "
                    "database was slow to answer)"
                )
            row.status = status
            row.duration_s = float(duration_s)
            row.outputs = dict(outputs) if outputs is not None else None
            row.error = error
            row.lease_expires_at = None
            if status != "succeeded":
                return None
            if dataset_sha256 is not None:
                run.dataset_sha256 = dataset_sha256
            if last and run.status not in ("succeeded", "failed"):
                run.status, run.finished_at = "succeeded", utcnow()
            if claim_next is None:
                return None
            session.flush()  # the ended stage counts in the next one's position
            return _claim(session, run, claim_next, worker, lease_s)

    def release_stage(self, stage_id: int, worker: str) -> None:
        """Give up ``worker``'s lease on a stage it could not finish for now (the database
        or broker was unavailable), so that the event's redelivery takes it at once."""
        with self._transaction(write=True) as session:
            session.execute(
                update(RunStageRow)
                .where(
                    RunStageRow.id == stage_id,
                    RunStageRow.worker == worker,
                    RunStageRow.status == "running",
                )
                .values(lease_expires_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Record (or overwrite) metrics of a run."""
        values = check_metrics(metrics)
        with self._transaction(write=True) as session:
            find_run(session, run_id)
            existing = {
                row.key: row
                for row in session.scalars(
                    select(RunMetricRow).where(RunMetricRow.run_id == run_id)
                )
            }
            for key, value in values.items():
                if key in existing:
                    existing[key].value = value
                else:
                    session.add(RunMetricRow(run_id=run_id, key=key, value=value))

    def update_params(self, run_id: str, changes: Mapping[str, Any]) -> None:
        """Set (or replace) some of a run's params, e.g. the cluster a resumed run ran on."""
        check_json(dict(changes), "run params")
        with self._transaction(write=True) as session:
            run = find_run(session, run_id)
            run.params = {**run.params, **changes}

    def add_learner(self, run_id: str, fingerprint: str, learner: int, sha256: str) -> None:
        """Record that learner ``learner`` of the ensemble ``fingerprint`` names is fitted
        and stored at ``sha256`` in the artifact store; recording it again is a no-op."""
        with self._transaction(write=True) as session:
            find_run(session, run_id)
            exists = session.scalar(
                select(RunLearnerRow.id).where(
                    RunLearnerRow.run_id == run_id,
                    RunLearnerRow.fingerprint == fingerprint,
                    RunLearnerRow.learner == learner,
                )
            )
            if exists is None:
                session.add(
                    RunLearnerRow(
                        run_id=run_id, fingerprint=fingerprint, learner=learner, sha256=sha256
                    )
                )

    def learners(self, run_id: str, fingerprint: str) -> dict[int, str]:
        """The stored learners of a run's ensemble ``fingerprint``: index → blob digest."""
        with self._transaction() as session:
            find_run(session, run_id)
            rows = session.scalars(
                select(RunLearnerRow).where(
                    RunLearnerRow.run_id == run_id, RunLearnerRow.fingerprint == fingerprint
                )
            )
            return {row.learner: row.sha256 for row in rows}

    def set_dataset(self, run_id: str, dataset_sha256: str) -> None:
        """Record the SHA-256 of the data a run trained on."""
        with self._transaction(write=True) as session:
            find_run(session, run_id).dataset_sha256 = dataset_sha256

    def finish(
        self, run_id: str, status: Literal["succeeded", "failed"], error: str | None = None
    ) -> None:
        """Mark a run as finished."""
        if status not in ("succeeded", "failed"):
            raise InvalidInputError(f"a run finishes as 'succeeded' or 'failed', not {status!r}")
        with self._transaction(write=True) as session:
            run = find_run(session, run_id)
            run.status = status
            run.error = error
            run.finished_at = utcnow()

    def get(self, run_id: str) -> RunInfo:
        """One run with its stages and metrics."""
        with self._transaction() as session:
            return run_infos(session, [find_run(session, run_id)])[0]

    def spec_text(self, run_id: str) -> str:
        """The spec text the run executed, as it was written (its lineage)."""
        with self._transaction() as session:
            return find_run(session, run_id).spec_text

    def spec_and_params(self, run_id: str) -> tuple[str, dict[str, Any]]:
        """The run's spec text and its parameters, in one read."""
        with self._transaction() as session:
            run = find_run(session, run_id)
            return run.spec_text, dict(run.params or {})


def _check_lease(lease_s: float) -> None:
    if lease_s <= 0:
        raise InvalidInputError(f"a stage lease lasts more than 0 seconds, not {lease_s}")


def _claim(session: Session, run: RunRow, name: str, worker: str, lease_s: float) -> StageClaim:
    """``Runs.claim_stage`` within a transaction that holds the run's row."""
    now = utcnow()
    if run.status in ("succeeded", "failed"):
        return StageClaim("finished")
    latest = session.scalar(
        select(RunStageRow)
        .where(RunStageRow.run_id == run.id, RunStageRow.name == name)
        .order_by(RunStageRow.position.desc())
        .limit(1)
    )
    if latest is not None and latest.status == "succeeded":
        return StageClaim("done", latest.id, latest.attempts, latest.outputs or {}, latest.worker)
    if latest is not None and latest.status == "running":
        expires = latest.lease_expires_at
        if expires is not None and expires > now:
            return StageClaim("busy", latest.id, latest.attempts, None, latest.worker, expires)
        latest.attempts += 1
        latest.worker, latest.started_at = worker, now
        latest.lease_expires_at = now + timedelta(seconds=lease_s)
        row = latest
    else:
        count = session.scalar(
            select(func.count()).select_from(RunStageRow).where(RunStageRow.run_id == run.id)
        )
        row = RunStageRow(
            run_id=run.id,
            position=(count or 0) + 1,
            name=name,
            status="running",
            started_at=now,
            duration_s=0.0,
            worker=worker,
            attempts=1,
            lease_expires_at=now + timedelta(seconds=lease_s),
        )
        session.add(row)
    if run.status == "queued":
        run.status = "running"
    session.flush()
    return StageClaim("claimed", row.id, row.attempts, None, worker)


def find_run(session: Session, run_id: str) -> RunRow:
    """The run row by id; ``NotFoundError`` if there is none."""
    run = session.get(RunRow, run_id) if isinstance(run_id, str) else None
    if run is None:
        raise NotFoundError(f"no run with id {run_id!r}; it was never started in this registry")
    return run


def run_infos(session: Session, runs: list[RunRow]) -> list[RunInfo]:
    """Records of runs with their stages (in order) and metrics."""
    ids = [run.id for run in runs]
    stages: dict[str, list[StageInfo]] = {i: [] for i in ids}
    metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
    if ids:
        for stage in session.scalars(
            select(RunStageRow)
            .where(RunStageRow.run_id.in_(ids))
            .order_by(RunStageRow.position, RunStageRow.id)
        ):
            stages[stage.run_id].append(
                StageInfo(
                    stage.name,
                    stage.status,
                    stage.started_at,
                    stage.duration_s,
                    stage.error,
                    stage.worker,
                    stage.attempts,
                    stage.outputs,
                )
            )
        for metric in session.scalars(select(RunMetricRow).where(RunMetricRow.run_id.in_(ids))):
            metrics[metric.run_id][metric.key] = metric.value
    return [
        RunInfo(
            id=run.id,
            spec_name=run.spec_name,
            status=run.status,
            params=run.params,
            dataset_sha256=run.dataset_sha256,
            package_version=run.package_version,
            error=run.error,
            started_at=run.started_at,
            finished_at=run.finished_at,
            stages=stages[run.id],
            metrics=dict(sorted(metrics[run.id].items())),
        )
        for run in runs
    ]

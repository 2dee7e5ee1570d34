"""The registry's database tables (SQLAlchemy 2 typed ORM); migrations mirror this file.

Datetimes are stored timezone-aware and always come back as UTC, on SQLite too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


BIG_ID = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit on PostgreSQL; SQLite's INTEGER is 64-bit already, and only INTEGER PRIMARY KEY
autoincrements there."""


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime that is stored in UTC and read back as UTC on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no offset; we only ever store UTC
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every registry table."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class ModelRow(Base):
    """A named model; ``latest_version`` only grows, so version numbers are never reused."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunRow(Base):
    """One execution of a pipeline spec."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec_name: Mapped[str] = mapped_column(String(200))
    spec_text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]]
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    package_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]


class ModelVersionRow(Base):
    """One registered version of a model and where its signed artifact is."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(32))
    manifest_digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    metrics: Mapped[dict[str, Any]]
    input_schema: Mapped[dict[str, Any]]
    output_schema: Mapped[dict[str, Any]]
    reference_profile: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasRow(Base):
    """Where an alias of a model points now."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(200))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasEventRow(Base):
    """One move of an alias, kept for history and rollback."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(200))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class TagRow(Base):
    """A key/value label on a version."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("version_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)


class RunStageRow(Base):
    """How one stage of a run ended and how long it took. A stage a stage worker runs is
    recorded when it starts (``running``, held by ``worker`` until ``lease_expires_at``,
    renewed while it runs) and updated when it ends, with the artifact-store digests of what
    it produced (``outputs``); ``attempts`` counts how many times it was started."""

    __tablename__ = "run_stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    outputs: Mapped[dict[str, Any] | None]
    lease_expires_at: Mapped[datetime | None]


class RunMetricRow(Base):
    """One metric a run logged."""

    __tablename__ = "run_metrics"
    __table_args__ = (UniqueConstraint("run_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[float] = mapped_column(Float)


class RunLearnerRow(Base):
    """A learner of an ensemble run, fitted and kept in the artifact store (its skops bytes
    at ``sha256``), so that a resumed run fits only the learners it lacks. ``fingerprint``
    names the recipe and data it was fitted from: a resume with others does not reuse it."""

    __tablename__ = "run_learners"
    __table_args__ = (UniqueConstraint("run_id", "fingerprint", "learner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    learner: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserRow(Base):
    """A person who signs in with a password; only its argon2 hash is kept."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyRow(Base):
    """A service's key; only the SHA-256 of the secret and its first characters are kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class FeedbackRow(Base):
    """The ground-truth label of one prediction, as received; ``status`` says how it joined."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("model_id", "prediction_id"),
        Index("ix_feedback_model_id_seq", "model_id", "seq"),
        Index("ix_feedback_model_id_status_seq", "model_id", "status", "seq"),
        Index("ix_feedback_model_id_received_at", "model_id", "received_at"),
    )

    seq: Mapped[int] = mapped_column(BIG_ID, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    prediction_id: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))


class MonitoringCounterRow(Base):
    """A running total the monitoring store keeps per model (e.g. duplicate feedback)."""

    __tablename__ = "monitoring_counters"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(BIG_ID)


class MonitoringLeaseRow(Base):
    """Which monitor owns a model, until when."""

    __tablename__ = "monitoring_leases"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class MonitoringEventRow(Base):
    """Something the monitor found (drift, degraded performance); ``key`` makes it raised once."""

    __tablename__ = "monitoring_events"
    __table_args__ = (UniqueConstraint("model_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime]
    evidence: Mapped[dict[str, Any]]


class MonitoringSnapshotRow(Base):
    """The monitor's latest state of one model version (windows, performance, drift)."""

    __tablename__ = "monitoring_snapshots"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class MonitoringHistoryRow(Base):
    """One point of a model version's monitoring over time: a compact copy of a snapshot
    (the numbers charts draw), kept every so often while the monitor runs."""

    __tablename__ = "monitoring_snapshot_history"
    __table_args__ = (
        Index("ix_monitoring_snapshot_history_model_id_version_at", "model_id", "version", "at"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    point: Mapped[dict[str, Any]]


class MonitoringCursorRow(Base):
    """How far the monitor has read one of its inputs for a model (the log, the feedback)."""

    __tablename__ = "monitoring_cursors"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    cursor: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class RetrainLockRow(Base):
    """A model's retrain attempt: in flight while ``finished_at`` is empty and ``expires_at``
    ahead (its holder renews it), stale once it expired unfinished; ``cooled_at`` is when
    the last finished attempt ended, which the cooldown counts from."""

    __tablename__ = "retrain_locks"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(300))
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(32))
    candidate: Mapped[int | None] = mapped_column(Integer)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    cooled_at: Mapped[datetime | None]

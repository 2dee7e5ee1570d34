"""Monitoring: ground-truth feedback, monitor leases, events, snapshots and cursors.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _model_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model_id"], ["models.id"], name=op.f(f"fk_{table}_model_id_models"), ondelete="CASCADE"
    )


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "feedback",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.String(length=200), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _model_fk("feedback"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_feedback")),
        sa.UniqueConstraint(
            "model_id", "prediction_id", name=op.f("uq_feedback_model_id_prediction_id")
        ),
    )
    op.create_index("ix_feedback_model_id_seq", "feedback", ["model_id", "seq"], unique=False)
    op.create_index(
        "ix_feedback_model_id_status_seq", "feedback", ["model_id", "status", "seq"], unique=False
    )
    op.create_table(
        "monitoring_counters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        _model_fk("monitoring_counters"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_counters")),
        sa.UniqueConstraint("model_id", "name", name=op.f("uq_monitoring_counters_model_id_name")),
    )
    op.create_table(
        "monitoring_leases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        _model_fk("monitoring_leases"),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_monitoring_leases")),
    )
    op.create_table(
        "monitoring_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        _model_fk("monitoring_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_events")),
        sa.UniqueConstraint("model_id", "key", name=op.f("uq_monitoring_events_model_id_key")),
    )
    op.create_table(
        "monitoring_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _model_fk("monitoring_snapshots"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_snapshots")),
        sa.UniqueConstraint(
            "model_id", "version", name=op.f("uq_monitoring_snapshots_model_id_version")
        ),
    )
    op.create_table(
        "monitoring_cursors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _model_fk("monitoring_cursors"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_cursors")),
        sa.UniqueConstraint("model_id", "name", name=op.f("uq_monitoring_cursors_model_id_name")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("monitoring_cursors")
    op.drop_table("monitoring_snapshots")
    op.drop_table("monitoring_events")
    op.drop_table("monitoring_leases")
    op.drop_table("monitoring_counters")
    op.drop_index("ix_feedback_model_id_status_seq", table_name="feedback")
    op.drop_index("ix_feedback_model_id_seq", table_name="feedback")
    op.drop_table("feedback")

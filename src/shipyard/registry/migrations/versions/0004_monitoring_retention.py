"""Monitoring retention: 64-bit feedback seq and counters, feedback totals kept as counters
(backfilled from the rows), an index to expire settled feedback by age.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOTALS = ("accepted", "pending", "joined", "unknown", "late")


def upgrade() -> None:
    """Apply this revision."""
    if op.get_bind().dialect.name == "postgresql":  # SQLite's INTEGER is 64-bit already
        op.alter_column("feedback", "seq", type_=sa.BigInteger(), existing_nullable=False)
        op.execute("ALTER SEQUENCE IF EXISTS feedback_seq_seq AS BIGINT")
        op.alter_column(
            "monitoring_counters", "value", type_=sa.BigInteger(), existing_nullable=False
        )
    op.create_index(
        "ix_feedback_model_id_received_at", "feedback", ["model_id", "received_at"], unique=False
    )
    # The totals the store used to count with GROUP BY are counters from now on.
    op.execute(
        "INSERT INTO monitoring_counters (model_id, name, value) "
        "SELECT model_id, status, COUNT(*) FROM feedback GROUP BY model_id, status"
    )
    op.execute(
        "INSERT INTO monitoring_counters (model_id, name, value) "
        "SELECT model_id, 'accepted', COUNT(*) FROM feedback GROUP BY model_id"
    )


def downgrade() -> None:
    """Revert this revision."""
    counters = sa.table("monitoring_counters", sa.column("name", sa.String()))
    op.execute(counters.delete().where(counters.c.name.in_(_TOTALS)))
    op.drop_index("ix_feedback_model_id_received_at", table_name="feedback")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("monitoring_counters", "value", type_=sa.Integer(), existing_nullable=False)
        op.execute("ALTER SEQUENCE IF EXISTS feedback_seq_seq AS INTEGER")
        op.alter_column("feedback", "seq", type_=sa.Integer(), existing_nullable=False)

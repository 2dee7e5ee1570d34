"""Monitoring history: a compact point of each version's snapshot every so often, so the
dashboard can draw live performance and drift over time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "monitoring_snapshot_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("point", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_monitoring_snapshot_history_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_snapshot_history")),
    )
    op.create_index(
        "ix_monitoring_snapshot_history_model_id_version_at",
        "monitoring_snapshot_history",
        ["model_id", "version", "at"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        "ix_monitoring_snapshot_history_model_id_version_at",
        table_name="monitoring_snapshot_history",
    )
    op.drop_table("monitoring_snapshot_history")

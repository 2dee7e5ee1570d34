"""Stage workers: each stage row of a run records which worker ran it, how many times it was
started (``attempts``), what it left in the artifact store (``outputs``) and, while it runs,
until when its worker holds it (``lease_expires_at``), so that a redelivered stage event is
deferred while a live worker holds the stage and taken over once that worker is gone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.add_column("run_stages", sa.Column("worker", sa.String(length=200), nullable=True))
    op.add_column(
        "run_stages",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.add_column("run_stages", sa.Column("outputs", sa.JSON(), nullable=True))
    op.add_column(
        "run_stages", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("run_stages") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("outputs")
        batch.drop_column("attempts")
        batch.drop_column("worker")

"""Alembic environment of the registry: runs on the connection the caller passes in.

``shipyard.registry.database`` sets ``config.attributes["connection"]``; no alembic.ini and no URL
are read here, so the same code migrates SQLite and PostgreSQL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from shipyard.registry.tables import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "the registry migrations run through shipyard.registry.database.upgrade(), "
        "which passes a connection in config.attributes['connection']"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

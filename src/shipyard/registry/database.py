"""Engines for the registry database (SQLite or PostgreSQL), migrated to the newest schema.

SQLite runs in WAL mode with foreign keys on; transactions that write start with
``BEGIN IMMEDIATE`` (see ``WRITE``) so two writers queue up instead of failing on a lock upgrade.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from shipyard.errors import ConfigurationError, ConflictError, UnavailableError

T = TypeVar("T")

WRITE = {"shipyard_write": True}
"""Execution options of a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

CONNECT_TIMEOUT_S = 5
SQLITE_BUSY_TIMEOUT_S = 30
RETRIES = 3
"""Attempts of a write that lost a race on a unique row (``retrying``)."""


def retrying(
    transaction: Callable[..., AbstractContextManager[Session]],
    work: Callable[[Session], T],
) -> T:
    """Run ``work`` in a write transaction, again when a unique constraint fired.

    Two writers can insert the same unique row at once (PostgreSQL; SQLite writers queue
    up): the loser's transaction rolled back whole, so running it again is safe. After
    ``RETRIES`` losses, ``ConflictError``.
    """
    for attempt in range(RETRIES):
        try:
            with transaction(write=True) as session:
                return work(session)
        except IntegrityError as error:
            if attempt == RETRIES - 1:
                raise ConflictError(
                    f"another writer kept changing the same rows ({error.orig}); try again"
                ) from error
    raise AssertionError("unreachable")


def masked(url: str | URL) -> str:
    """The URL with any password replaced by ``***``, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<malformed database URL>"


def unavailable(url: str | URL, error: BaseException) -> UnavailableError:
    """The error to raise when the database cannot be reached or used."""
    reason = _first_line(error)
    return UnavailableError(
        f"cannot reach the registry database at {masked(url)} ({reason}); "
        "check SHIPYARD_DATABASE_URL and that the server is running"
    )


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def migrations_config(connection: Connection) -> Config:
    """An Alembic config for the packaged migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(files("shipyard.registry") / "migrations"))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (default the newest). On SQLite the migration
    takes the write lock first (``BEGIN IMMEDIATE``): processes opening a fresh home at once
    then wait their turn (and find it migrated) instead of failing on a lock upgrade."""
    with engine.connect().execution_options(**WRITE) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7426358011)")
        command.upgrade(migrations_config(connection), revision)


def connect(url: str) -> Engine:
    """An engine for ``url``, migrated to the newest schema; unreachable → ``UnavailableError``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise ConfigurationError(
            f"the database URL is malformed ({error}); use e.g. "
            "sqlite:///path/registry.db or postgresql+psycopg://user:password@host:5432/db "
            "in SHIPYARD_DATABASE_URL"
        ) from error
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(parsed)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = _create(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    else:
        raise ConfigurationError(
            f"the database URL {masked(parsed)} uses {backend!r}; the registry supports "
            "sqlite:/// and postgresql+psycopg:// URLs in SHIPYARD_DATABASE_URL"
        )
    try:
        upgrade(engine)
    except (OperationalError, DBAPIError) as error:
        engine.dispose()
        raise unavailable(parsed, error) from error
    except BaseException:
        engine.dispose()
        raise
    return engine


def _create(url: URL, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise ConfigurationError(
            f"cannot use the database URL {masked(url)} ({error}); check SHIPYARD_DATABASE_URL"
        ) from error


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    }
    if in_memory:
        # One shared connection, or every checkout would see a new empty database.
        kwargs["poolclass"] = StaticPool
    else:
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(
                f"cannot create the folder of the SQLite database {database} ({error}); "
                "set SHIPYARD_HOME or SHIPYARD_DATABASE_URL to a writable place"
            ) from error
    engine = _create(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below): sqlite3's own handling skips it for
        # SELECT and DDL, which breaks transactional migrations and repeatable reads.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("shipyard_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine

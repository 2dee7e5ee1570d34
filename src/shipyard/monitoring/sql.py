"""The prediction log in a SQL database: the production option shared by every process.

``prediction_log = "database"`` puts the table in the registry database; a SQLAlchemy URL
(``postgresql+psycopg://…``, ``sqlite:///…``) puts it in a database of its own. Either way
the store creates its table ``prediction_log`` (and indexes) itself, through SQLAlchemy
metadata, if it is missing. The columns are those of the Parquet log, with the features as
JSON (name → value, in layout order) and a ``batch`` column: the UUIDv7 hex of the write
that stored the row, which ``read_new`` follows exactly as the Parquet store follows file
names (``BatchCursor``), so a transaction that commits after a later one is still read.

Batch names carry the time they were made. On PostgreSQL that is the database's clock, read
in the write's transaction, so the writers' own clocks do not matter. Elsewhere (SQLite) it
is the writer's clock: a writer whose clock runs more than the grace period
(``DEFAULT_GRACE_SECONDS``) fast names its batches ahead of the others, whose batches then
fall below a reader's floor and are never read; ``read_new`` logs a warning when it meets a
batch named later than its own clock plus the grace. Keep the writers' clocks in sync (NTP).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    NoSuchModuleError,
    SQLAlchemyError,
)

from shipyard.errors import ConfigurationError, InvalidInputError, PredictionLogError
from shipyard.monitoring.records import (
    BASE_FIELDS,
    DEFAULT_GRACE_SECONDS,
    TIME_TYPE,
    BatchCursor,
    batch_name,
    name_millis,
    schema,
    single_version,
)
from shipyard.registry.monitoring import MAX_ID_LENGTH

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
EXPIRE_BATCH_ROWS = 10_000
"""Rows ``expire`` deletes per transaction."""
MAX_EXPIRE_BATCHES = 1_000
#: Rows ``newest_first`` reads per page (more when rows share the page's last time).
NEWEST_PAGE_ROWS = 10_000
#: Pages ``newest_first`` reads at most (a billion rows at the default page).
MAX_NEWEST_PAGES = 100_000
"""Transactions of one ``expire`` call at most; what is left goes next time."""
metadata = sa.MetaData()
predictions = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("batch", sa.String(32), nullable=False),
    sa.Column("id", sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column("model", sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("latency_ms", sa.Float),
    sa.Column("score", sa.Float),
    sa.Column("label", sa.Text),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Index("ix_prediction_log_model_id", "model", "id"),
    sa.Index("ix_prediction_log_model_time", "model", "time"),
    sa.Index("ix_prediction_log_model_batch", "model", "batch"),
)
"""The table: one row per prediction."""

_COLUMNS = [field.name for field in BASE_FIELDS]


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            return sa.create_engine(
                parsed, connect_args={"check_same_thread": False, "timeout": 30}
            )
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if backend == "postgresql" else {}
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as error:
        raise ConfigurationError(
            f"cannot use {url!r} as the prediction log's database ({error}); set "
            "prediction_log to parquet, database, off or a SQLAlchemy URL such as "
            "postgresql+psycopg://user@host:5432/db"
        ) from error


def _unavailable(doing: str, error: BaseException) -> PredictionLogError:
    return PredictionLogError(
        f"cannot {doing} the prediction log's database ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}); check that it is reachable"
    )


def _refused(error: DataError) -> InvalidInputError:
    """The database refused a value (too long, out of range): retrying cannot help."""
    return InvalidInputError(
        f"the prediction log's database refused the batch's rows as invalid ("
        f"{str(error.orig or error).splitlines()[0]}); prediction ids and model names "
        f"are at most {MAX_ID_LENGTH} characters; trying again will not help"
    )


def _number(value: Any) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


class SqlLog:
    """The prediction log as rows of the table ``prediction_log`` in a SQL database."""

    def __init__(self, url: str, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.engine = _engine(url)
        self.grace_seconds = grace_seconds
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise _unavailable("create the table of", error) from error

    def write(self, batch: pa.Table) -> None:
        """Insert the batch's rows in one transaction, tagged with a new batch name."""
        single_version(batch)
        columns = {c: batch.column(c).to_pylist() for c in _COLUMNS}
        features = [
            {k: _number(v) for k, v in row.items()} for row in batch.column("features").to_pylist()
        ]
        rows = [
            {
                "id": columns["id"][i],
                "model": columns["model"][i],
                "version": columns["version"][i],
                "time": columns["time"][i],
                "source": columns["source"][i],
                "latency_ms": _number(columns["latency_ms"][i]),
                "score": _number(columns["score"][i]),
                "label": columns["label"][i],
                "features": features[i],
            }
            for i in range(batch.num_rows)
        ]
        try:
            with self.engine.begin() as connection:
                name = batch_name(self._database_millis(connection))
                for row in rows:
                    row["batch"] = name
                connection.execute(predictions.insert(), rows)
        except DataError as error:
            raise _refused(error) from error
        except SQLAlchemyError as error:
            raise _unavailable("write to", error) from error

    def _database_millis(self, connection: sa.Connection) -> int | None:
        """The database's clock in Unix milliseconds (PostgreSQL), else None (this host's)."""
        if self.engine.dialect.name != "postgresql":
            return None
        seconds = connection.scalar(sa.text("SELECT extract(epoch FROM clock_timestamp())"))
        return int(float(seconds) * 1000)

    def _select(self, where: Sequence[Any]) -> list[sa.Row[Any]]:
        query = sa.select(predictions).where(*where).order_by(predictions.c.seq)
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(query))
        except SQLAlchemyError as error:
            raise _unavailable("read", error) from error

    def read_new(
        self, model: str, cursor: Mapping[str, Any] | None
    ) -> tuple[dict[int, pa.Table], dict[str, Any]]:
        """Rows of the batches written since ``cursor``, per version."""
        position = BatchCursor.load(cursor)
        floor = position.floor(self.grace_seconds)
        where = [predictions.c.model == model]
        if floor is not None:
            where.append(predictions.c.batch >= floor)
        if position.recent:  # read already: not fetched (nor their features decoded) again
            where.append(predictions.c.batch.not_in(sorted(position.recent)))
        rows = self._select(where)
        seen = {r.batch for r in rows}
        if seen and self.engine.dialect.name != "postgresql":  # named by the writers' clocks
            self._check_clock(model, max(seen))
        return _tables(rows), position.advance(seen, self.grace_seconds).dump()

    def _check_clock(self, model: str, newest: str) -> None:
        ahead_s = name_millis(newest) / 1000 - time.time()
        if ahead_s > self.grace_seconds:
            logger.warning(
                "batch %s of %s's prediction log is named %.0f s later than this clock: a "
                "writer's clock runs fast, and rows other writers log meanwhile may never be "
                "read; keep the clocks in sync (NTP)",
                newest,
                model,
                ahead_s,
            )

    def scan(
        self,
        model: str,
        *,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[int, pa.Table]:
        """Every retained row of ``model`` (of one version), with since <= time < until."""
        where = [predictions.c.model == model]
        if version is not None:
            where.append(predictions.c.version == version)
        if since is not None:
            where.append(predictions.c.time >= since.astimezone(UTC))
        if until is not None:
            where.append(predictions.c.time < until.astimezone(UTC))
        return _tables(self._select(where))

    def newest_first(
        self, model: str, *, since: datetime | None = None, page_rows: int = NEWEST_PAGE_ROWS
    ) -> Iterator[tuple[datetime, dict[int, pa.Table]]]:
        """The rows with ``since <= time``, about ``page_rows`` at a time, newest first: a
        page ends at a time whose rows it holds all of, which is its floor."""
        model_rows = [predictions.c.model == model]
        if since is not None:
            model_rows.append(predictions.c.time >= since.astimezone(UTC))
        page = sa.select(
            predictions.c.id, predictions.c.version, predictions.c.time, predictions.c.features
        )
        floor: datetime | None = None
        for _ in range(MAX_NEWEST_PAGES):  # each page moves the floor down; bounded anyway
            where = list(model_rows)
            if floor is not None:
                where.append(predictions.c.time < floor)
            # The time of the page_rows-th newest row: the page takes every row down to it.
            lowest = (
                sa.select(predictions.c.time)
                .where(*where)
                .order_by(predictions.c.time.desc())
                .offset(page_rows - 1)
                .limit(1)
            )
            try:
                with self.engine.connect() as connection:
                    found = connection.scalar(lowest)
                    bottom = None if found is None else _utc(found)
                    if bottom is not None:
                        where.append(predictions.c.time >= bottom)
                    rows: list[Any] = list(connection.execute(page.where(*where)))
            except SQLAlchemyError as error:
                raise _unavailable("read", error) from error
            if bottom is None:  # the last page: every row left
                if rows:
                    yield since or min(_utc(r.time) for r in rows), _newest_tables(rows)
                return
            floor = bottom
            yield floor, _newest_tables(rows)

    def expire(self, before: datetime, *, batch_rows: int = EXPIRE_BATCH_ROWS) -> int:
        """Delete the rows logged before ``before``, ``batch_rows`` per transaction (a
        short lock each, however much is due); returns how many."""
        removed = 0
        old = predictions.c.time < before.astimezone(UTC)
        for _ in range(MAX_EXPIRE_BATCHES):  # the rest waits for the next call
            chosen = sa.select(predictions.c.seq).where(old).limit(batch_rows)
            try:
                with self.engine.begin() as connection:
                    seqs = list(connection.scalars(chosen))
                    if seqs:
                        connection.execute(predictions.delete().where(predictions.c.seq.in_(seqs)))
            except SQLAlchemyError as error:
                raise _unavailable("expire rows of", error) from error
            removed += len(seqs)
            if len(seqs) < batch_rows:
                break
        return removed

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _tables(rows: list[sa.Row[Any]]) -> dict[int, pa.Table]:
    by_version: dict[int, list[sa.Row[Any]]] = {}
    for row in rows:
        by_version.setdefault(row.version, []).append(row)
    return {version: _table(part) for version, part in sorted(by_version.items())}


def _newest_tables(rows: list[Any]) -> dict[int, pa.Table]:
    """Rows of ``id, version, time, features`` as ``NEWEST_COLUMNS`` tables, per version."""
    by_version: dict[int, list[Any]] = {}
    for row in rows:
        by_version.setdefault(row.version, []).append(row)
    tables = {}
    for version, part in sorted(by_version.items()):
        features = schema(list(part[0].features)).field("features")
        tables[version] = pa.table(
            {
                "id": pa.array([r.id for r in part], pa.string()),
                "time": pa.array([_utc(r.time) for r in part], TIME_TYPE),
                "features": pa.array([r.features for r in part], features.type),
            }
        )
    return tables


def _table(rows: list[sa.Row[Any]]) -> pa.Table:
    names = list(rows[0].features)
    target = schema(names)
    columns = {
        "id": [r.id for r in rows],
        "model": [r.model for r in rows],
        "version": [r.version for r in rows],
        "time": pa.array([_utc(r.time) for r in rows], TIME_TYPE),
        "source": [r.source for r in rows],
        "latency_ms": [r.latency_ms for r in rows],
        "score": [r.score for r in rows],
        "label": [r.label for r in rows],
        "features": [r.features for r in rows],
    }
    return pa.table(
        [pa.array(columns[f.name], f.type) for f in target],
        schema=target,
    )

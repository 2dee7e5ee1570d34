"""The prediction log's records and its stores: the read/scan/expire cases run on the
Parquet store and the SQL store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from shipyard.errors import ConfigurationError, InvalidInputError, PredictionLogError
from shipyard.monitoring.log import (
    NEWEST_COLUMNS,
    ParquetLog,
    PredictionLog,
    open_prediction_log,
    prediction_table,
    schema,
)
from shipyard.monitoring.sql import SqlLog
from shipyard.settings import Settings

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
Stores = Callable[[], PredictionLog]


@pytest.fixture(params=["parquet", "sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Make handles (as separate processes would) on one new, empty prediction log."""
    made: list[PredictionLog] = []
    url = f"sqlite:///{tmp_path / 'log.db'}"
    name = f"shipyard_log_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        request.applymarker(pytest.mark.integration)
        try:
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as error:
            pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable ({error})")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def make() -> PredictionLog:
        store: PredictionLog = (
            ParquetLog(tmp_path / "log") if request.param == "parquet" else SqlLog(url)
        )
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    if request.param == "postgresql":
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


NAMES = ["a", "b", "c"]


def batch(
    ids: list[str], *, model: str = "fraud", version: int = 1, source: str = "http"
) -> pa.Table:
    """A binary classifier's records for these ids."""
    rows = len(ids)
    features = np.arange(rows * len(NAMES), dtype=np.float32).reshape(rows, len(NAMES))
    outputs = {
        "probability": np.linspace(0, 1, rows, dtype=np.float32),
        "label": np.arange(rows) % 2 == 1,
    }
    return prediction_table(model, version, source, ids, NAMES, features, outputs, 1.5)


def test_records_have_the_documented_schema() -> None:
    table = batch(["x", "y"])
    assert table.schema == schema(NAMES)
    assert str(table.schema.field("features").type) == ("struct<a: float, b: float, c: float>")
    assert table.column("label").to_pylist() == ["0", "1"]
    assert table.column("score").to_pylist() == [0.0, 1.0]
    assert table.column("features").to_pylist()[1] == {"a": 3.0, "b": 4.0, "c": 5.0}
    assert table.column("latency_ms").to_pylist() == [1.5, 1.5]
    assert table.column("time").type == pa.timestamp("us", tz="UTC")


def test_multiclass_scores_the_predicted_class_and_regressors_have_no_label() -> None:
    features = np.zeros((2, 3), np.float32)
    multi = {
        "probabilities": np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]], np.float32),
        "label": np.array(["cat", "dog"]),
    }
    table = prediction_table("m", 2, "stream", ["1", "2"], NAMES, features, multi, 0.0)
    assert table.column("score").to_pylist() == pytest.approx([0.7, 0.5])
    assert table.column("label").to_pylist() == ["cat", "dog"]
    regression = {"prediction": np.array([1.5, -2.0], np.float32)}
    latency = np.array([1.0, 2.0])
    table = prediction_table("m", 2, "http", ["1", "2"], NAMES, features, regression, latency)
    assert table.column("score").to_pylist() == [1.5, -2.0]
    assert table.column("label").to_pylist() == [None, None]
    assert table.column("latency_ms").to_pylist() == [1.0, 2.0]


def test_records_refuse_mismatched_shapes_and_unknown_sources() -> None:
    with pytest.raises(InvalidInputError, match="3 names"):
        prediction_table("m", 1, "http", ["1"], NAMES, np.zeros((2, 3)), {}, 0.0)
    with pytest.raises(InvalidInputError, match="source"):
        prediction_table("m", 1, "kafka", ["1"], NAMES, np.zeros((1, 3)), {"p": np.ones(1)}, 0)


def test_a_write_lands_as_one_hive_partitioned_file(tmp_path: Path) -> None:
    log = ParquetLog(tmp_path)
    hours = {datetime.now(UTC).strftime("hour=%Y-%m-%dT%H")}
    log.write(batch(["x", "y"], version=3))
    hours.add(datetime.now(UTC).strftime("hour=%Y-%m-%dT%H"))
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 1
    relative = files[0].relative_to(tmp_path).parts
    assert relative[:2] == ("model=fraud", "version=3")
    assert relative[2] in hours  # the hour it was written
    assert relative[3].startswith("part-")
    table = pq.read_table(files[0])
    assert table.schema == schema(NAMES)
    assert table.column("id").to_pylist() == ["x", "y"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_a_batch_must_hold_one_model_version(stores: Stores) -> None:
    mixed = pa.concat_tables([batch(["x"], version=1), batch(["y"], version=2)])
    with pytest.raises(InvalidInputError, match="one model version"):
        stores().write(mixed)


def test_an_unwritable_folder_is_a_prediction_log_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(PredictionLogError, match="cannot write the prediction log") as caught:
        ParquetLog(blocked).write(batch(["x"]))
    assert caught.value.retryable


def test_read_new_returns_each_row_once_per_version(stores: Stores) -> None:
    log = stores()
    log.write(batch(["a1", "a2"], version=1))
    log.write(batch(["b1"], version=2))
    log.write(batch(["other"], model="other"))
    found, cursor = log.read_new("fraud", None)
    assert {v: t.column("id").to_pylist() for v, t in found.items()} == {
        1: ["a1", "a2"],
        2: ["b1"],
    }
    cursor = json.loads(json.dumps(cursor))  # stored as JSON by the monitor
    assert log.read_new("fraud", cursor)[0] == {}
    log.write(batch(["a3"], version=1))
    found, cursor = log.read_new("fraud", cursor)
    assert {v: t.column("id").to_pylist() for v, t in found.items()} == {1: ["a3"]}


def test_read_new_sees_a_file_renamed_into_place_after_a_later_one(tmp_path: Path) -> None:
    """Two writers: the slower one named its file first but renames it last."""
    slow, fast = ParquetLog(tmp_path), ParquetLog(tmp_path)
    reader = ParquetLog(tmp_path)
    slow.write(batch(["slow"]))
    (slow_file,) = tmp_path.rglob("part-*.parquet")
    hidden = slow_file.with_name("." + slow_file.name + ".tmp")
    slow_file.replace(hidden)  # still being written, as far as readers can tell
    fast.write(batch(["fast"]))
    found, cursor = reader.read_new("fraud", None)
    assert found[1].column("id").to_pylist() == ["fast"]
    hidden.replace(slow_file)  # the slow writer's rename
    found, cursor = reader.read_new("fraud", cursor)
    assert found[1].column("id").to_pylist() == ["slow"]
    for _ in range(2):
        found, cursor = reader.read_new("fraud", cursor)
        assert found == {}


def test_read_new_across_many_interleaved_writes_misses_and_repeats_nothing(
    stores: Stores,
) -> None:
    writers = [stores(), stores()]
    reader = stores()
    cursor = None
    read: list[str] = []
    written: list[str] = []
    for step in range(20):
        ids = [f"{step}-{w}" for w in range(2)]
        for writer, row in zip(writers, ids, strict=True):
            writer.write(batch([row], version=1 + step % 2))
        written += ids
        if step % 3 == 0:
            found, cursor = reader.read_new("fraud", cursor)
            read += [i for t in found.values() for i in t.column("id").to_pylist()]
    found, cursor = reader.read_new("fraud", cursor)
    read += [i for t in found.values() for i in t.column("id").to_pylist()]
    assert sorted(read) == sorted(written)


def test_a_bad_cursor_is_refused(stores: Stores) -> None:
    with pytest.raises(InvalidInputError, match="cursor"):
        stores().read_new("fraud", {"newest": 3, "recent": []})


def test_newest_first_reads_ids_times_features_newest_first_in_chunks(stores: Stores) -> None:
    log = stores()
    now = datetime.now(UTC)
    features = np.zeros((1, 3), np.float32)
    outputs = {"prediction": np.zeros(1, np.float32)}
    written = {}
    for i in range(7):  # a minute apart, newest last, two versions
        version, when = 1 + i % 2, now - timedelta(minutes=7 - i)
        written[f"r{i}"] = when
        log.write(
            prediction_table("fraud", version, "http", [f"r{i}"], NAMES, features, outputs, 0, when)
        )
    chunks = (
        list(log.newest_first("fraud", page_rows=2))  # pages of about two rows
        if isinstance(log, SqlLog)
        else list(log.newest_first("fraud"))
    )
    seen: list[str] = []
    floors = []
    for floor, tables in chunks:
        for table in tables.values():
            assert table.column_names == list(NEWEST_COLUMNS)
            assert table.schema.field("features").type.num_fields == len(NAMES)
            ids = table.column("id").to_pylist()
            if isinstance(log, SqlLog):  # a page's floor is its oldest row's time
                assert all(written[i] >= floor for i in ids)
            # Parquet's floor is the start of the hour the rows were written in: a row made
            # before that hour began and written after may sit below it (this test, run in
            # an hour's first 7 minutes). What readers rely on holds for both: every row of
            # a later chunk is older than the floors before it.
            assert all(written[i] < f for i in ids for f in floors)
            seen += ids
        floors.append(floor)
    assert sorted(seen) == sorted(written)  # every row once
    assert floors == sorted(floors, reverse=True)
    if isinstance(log, SqlLog):
        assert len(chunks) >= 3  # bounded pages, not one read of everything
    recent = [
        i
        for _, tables in log.newest_first("fraud", since=now - timedelta(minutes=2, seconds=30))
        for t in tables.values()
        for i in t.column("id").to_pylist()
    ]
    assert sorted(recent) == ["r5", "r6"]
    assert list(log.newest_first("nothing")) == []


def test_scan_filters_by_version_and_time(stores: Stores) -> None:
    log = stores()
    now = datetime.now(UTC)
    features = np.zeros((1, 3), np.float32)
    outputs = {"prediction": np.zeros(1, np.float32)}
    for version, offset in [(1, -30), (1, 0), (2, 0)]:
        when = now + timedelta(minutes=offset)
        log.write(
            prediction_table(
                "fraud", version, "http", [f"{version}{offset}"], NAMES, features, outputs, 0, when
            )
        )
    everything = log.scan("fraud")
    assert {v: t.num_rows for v, t in everything.items()} == {1: 2, 2: 1}
    assert list(log.scan("fraud", version=2)) == [2]
    recent = log.scan("fraud", since=now - timedelta(minutes=1))
    assert {v: t.column("id").to_pylist() for v, t in recent.items()} == {1: ["10"], 2: ["20"]}
    old = log.scan("fraud", until=now - timedelta(minutes=1))
    assert {v: t.column("id").to_pylist() for v, t in old.items()} == {1: ["1-30"]}
    assert log.scan("nothing") == {}


def test_expire_removes_what_was_logged_before_the_cutoff(stores: Stores) -> None:
    log = stores()
    log.write(batch(["x"]))
    log.write(batch(["y"], model="other"))
    assert log.expire(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert sum(t.num_rows for t in log.scan("fraud").values()) == 1
    assert log.expire(datetime.now(UTC) + timedelta(hours=2)) == 2
    assert log.scan("fraud") == {}
    assert log.read_new("fraud", None)[0] == {}


def test_sql_expire_deletes_in_batches_across_models(stores: Stores) -> None:
    log = stores()
    if not isinstance(log, SqlLog):
        pytest.skip("the Parquet store removes whole files")
    log.write(batch([f"f{i}" for i in range(5)]))
    log.write(batch([f"o{i}" for i in range(3)], model="other"))
    transactions: list[int] = []
    sa.event.listen(log.engine, "begin", lambda _: transactions.append(1))
    assert log.expire(datetime.now(UTC) + timedelta(hours=2), batch_rows=2) == 8
    assert len(transactions) == 5  # 2 + 2 + 2 + 2 rows, then none left
    assert log.scan("fraud") == {}
    assert log.scan("other") == {}
    log.write(batch(["z"]))
    assert log.expire(datetime.now(UTC) + timedelta(hours=2), batch_rows=1) == 1


def test_sql_read_new_does_not_fetch_the_batches_it_read_already(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches of the grace period are filtered out in SQL, not fetched and decoded
    every cycle to be dropped."""
    log = stores()
    if not isinstance(log, SqlLog):
        pytest.skip("the Parquet store lists file names")
    log.write(batch(["a", "b"]))
    found, cursor = log.read_new("fraud", None)
    assert found[1].num_rows == 2
    fetched: list[int] = []
    select = log._select

    def counting(where: Any) -> Any:
        rows = select(where)
        fetched.append(len(rows))
        return rows

    monkeypatch.setattr(log, "_select", counting)
    log.write(batch(["c"]))
    found, cursor = log.read_new("fraud", cursor)
    assert found[1].column("id").to_pylist() == ["c"]
    assert log.read_new("fraud", cursor)[0] == {}
    assert fetched == [1, 0]


def test_open_prediction_log_follows_the_settings(tmp_path: Path) -> None:
    assert open_prediction_log(Settings(home=tmp_path, prediction_log="off")) is None
    store = open_prediction_log(Settings(home=tmp_path))
    assert isinstance(store, ParquetLog)
    assert store.root == tmp_path / "predictions"
    with pytest.raises(ValueError, match="SQLAlchemy URL"):
        Settings(home=tmp_path, prediction_log="s3-bucket")


def test_stores_read_back_the_schema_and_values_written(stores: Stores) -> None:
    log = stores()
    written = batch(["x", "y"])
    log.write(written)
    (table,) = log.scan("fraud").values()
    assert table.schema == written.schema
    assert table.to_pylist() == written.to_pylist()


def test_sql_read_new_sees_a_transaction_committed_after_a_later_one(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQL twin of the late rename: a batch named first but committed last."""
    log, reader = stores(), stores()
    if not isinstance(log, SqlLog):
        pytest.skip("the Parquet store has its own test of late renames")
    import shipyard.monitoring.sql as sql

    early = sql.batch_name()
    log.write(batch(["fast"]))
    found, cursor = reader.read_new("fraud", None)
    assert found[1].column("id").to_pylist() == ["fast"]
    monkeypatch.setattr(sql, "batch_name", lambda *_: early)
    log.write(batch(["slow"]))
    found, cursor = reader.read_new("fraud", cursor)
    assert found[1].column("id").to_pylist() == ["slow"]
    assert reader.read_new("fraud", cursor)[0] == {}


def test_a_writer_whose_clock_runs_fast_hides_no_rows_on_postgresql(
    stores: Stores, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch names come from the database's clock on PostgreSQL, so a writer 10 minutes
    fast does not push the reader's floor past the others' batches; elsewhere they do come
    from the writers' clocks, and the reader warns."""
    log, reader = stores(), stores()
    if not isinstance(log, SqlLog):
        pytest.skip("Parquet names files by the writers' clocks")
    import shipyard.monitoring.records as records

    real = records.new_id
    fast = int(time.time() * 1000) + 600_000
    monkeypatch.setattr(records, "new_id", lambda: f"{fast:012x}" + real().replace("-", "")[12:])
    log.write(batch(["fast"]))
    monkeypatch.setattr(records, "new_id", real)
    with caplog.at_level(logging.WARNING, logger="shipyard.monitoring.sql"):
        found, cursor = reader.read_new("fraud", None)
    assert found[1].column("id").to_pylist() == ["fast"]
    log.write(batch(["on time"]))
    found, cursor = reader.read_new("fraud", cursor)
    if log.engine.dialect.name == "postgresql":
        assert found[1].column("id").to_pylist() == ["on time"]
        assert "clock runs fast" not in caplog.text
    else:
        assert found == {}  # below the floor the fast writer set
        assert "s later than this clock: a writer's clock runs fast" in caplog.text


def test_an_unreachable_database_is_a_prediction_log_error(tmp_path: Path) -> None:
    with pytest.raises(PredictionLogError, match="prediction log's database") as caught:
        SqlLog("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert caught.value.retryable


def test_a_bad_url_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SQLAlchemy URL"):
        SqlLog("nosuchdialect://x")


def test_the_sql_store_is_the_registry_database_or_a_url(tmp_path: Path) -> None:
    database = open_prediction_log(Settings(home=tmp_path, prediction_log="database"))
    assert isinstance(database, SqlLog)
    assert str(database.engine.url) == f"sqlite:///{tmp_path / 'registry.db'}"
    database.close()
    url = f"sqlite:///{tmp_path / 'other.db'}"
    other = open_prediction_log(Settings(home=tmp_path, prediction_log=url))
    assert isinstance(other, SqlLog)
    other.write(batch(["x"]))
    assert other.read_new("fraud", None)[0][1].num_rows == 1
    other.close()


def test_expire_tolerates_another_monitor_removing_the_same_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shutil

    log = ParquetLog(tmp_path)
    log.write(batch(["x"]))
    log.write(batch(["y"], model="other"))
    real = os.scandir
    raced: list[str] = []

    def racing(path: Any) -> Any:  # the other one removes hours first
        if isinstance(path, str) and Path(path).name.startswith("hour=") and path not in raced:
            raced.append(path)
            shutil.rmtree(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", racing)
    assert log.expire(datetime.now(UTC) + timedelta(hours=2)) == 0  # the other one did it
    monkeypatch.setattr(os, "scandir", real)
    assert log.scan("fraud") == {}


def test_a_damaged_file_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = ParquetLog(tmp_path)
    log.write(batch(["x", "y"]))
    log.write(batch(["z"]))
    damaged = sorted(tmp_path.rglob("part-*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:40])  # a copy cut short
    tables, _ = log.read_new("fraud", None)
    assert tables[1].column("id").to_pylist() == ["z"]
    assert log.scan("fraud")[1].num_rows == 1
    assert "not a readable Parquet file" in caplog.text


def test_rows_the_database_refuses_are_invalid_input_not_unreachable(stores: Stores) -> None:
    """An id too long for PostgreSQL's column is the rows' fault: retrying cannot help, so
    it is not a retryable "check that it is reachable" error (the scorer would retry for
    ever)."""
    log = stores()
    if not isinstance(log, SqlLog) or log.engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL enforces the column's length")
    with pytest.raises(InvalidInputError, match="at most 200 characters") as caught:
        log.write(batch(["x" * 201]))
    assert not caught.value.retryable
    assert "reachable" not in str(caught.value)
    log.write(batch(["x" * 200]))
    assert log.scan("fraud")[1].num_rows == 1

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from shipyard.errors import ConfigurationError, UnavailableError
from shipyard.registry.database import connect, masked


def test_sqlite_creates_its_folder_and_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "registry.db"
    engine = connect(f"sqlite:///{path}")
    try:
        assert path.exists()
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert "model_versions" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_connect_twice_is_a_no_op(database_url: str) -> None:
    for _ in range(2):
        engine = connect(database_url)
        engine.dispose()


def test_in_memory_sqlite_keeps_its_schema() -> None:
    engine = connect("sqlite://")
    try:
        assert "models" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_unreachable_postgresql_is_unavailable_and_hides_the_password() -> None:
    url = "postgresql+psycopg://shipyard:s3cret-pw@127.0.0.1:1/registry"
    with pytest.raises(UnavailableError) as raised:
        connect(url)
    message = str(raised.value)
    assert "s3cret-pw" not in message
    assert "***" in message
    assert "127.0.0.1:1" in message
    assert "SHIPYARD_DATABASE_URL" in message
    assert raised.value.retryable


def test_auth_failure_is_unavailable() -> None:
    url = "postgresql+psycopg://no_such_role_x:pw@127.0.0.1:5432/no_such_db_x"
    with pytest.raises(UnavailableError) as raised:
        connect(url)
    assert ":pw@" not in str(raised.value)
    assert "no_such_role_x:***@" in str(raised.value)


@pytest.mark.parametrize("url", ["not a url", "postgresql+psycopg://u:secret@host:notaport/db"])
def test_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="SHIPYARD_DATABASE_URL") as raised:
        connect(url)
    assert "secret" not in str(raised.value)


def test_unsupported_backend_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="sqlite"):
        connect("mysql://user:pw@localhost/db")


def test_masked_hides_the_password() -> None:
    assert masked("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert masked("not a url") == "<malformed database URL>"


def test_processes_opening_a_fresh_sqlite_home_at_once_all_migrate_it(tmp_path: Path) -> None:
    """Six processes connect to one new SQLite file together (a worker and a submit started
    side by side): each waits for the write lock instead of failing with "database is
    locked", and the schema is made once."""
    url = f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    code = f"from shipyard.registry.database import connect\nconnect({url!r}).dispose()"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(6)
    ]
    errors = [process.communicate(timeout=120)[1].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * 6, errors
    engine = connect(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from shipyard.registry.database import connect, migrations_config
from shipyard.registry.tables import Base


def test_migrated_schema_matches_the_orm(database_url: str) -> None:
    engine = connect(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == "0008"
    finally:
        engine.dispose()


def test_one_head_and_downgrade_to_base(database_url: str) -> None:
    from alembic import command

    engine = connect(database_url)
    try:
        with engine.begin() as connection:
            config = migrations_config(connection)
            assert len(ScriptDirectory.from_config(config).get_heads()) == 1
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_ship_inside_the_package() -> None:
    from importlib.resources import files

    folder = files("shipyard.registry") / "migrations"
    assert (folder / "env.py").is_file()
    assert (folder / "script.py.mako").is_file()
    assert (folder / "versions" / "0001_initial.py").is_file()
    assert (folder / "versions" / "0002_users.py").is_file()
    assert (folder / "versions" / "0003_monitoring.py").is_file()
    assert (folder / "versions" / "0004_monitoring_retention.py").is_file()
    assert (folder / "versions" / "0005_retraining.py").is_file()
    assert (folder / "versions" / "0006_snapshot_history.py").is_file()
    assert (folder / "versions" / "0007_run_learners.py").is_file()
    assert (folder / "versions" / "0008_stage_workers.py").is_file()

"""Fixtures shared by every test folder.

``settings`` is a fresh Shipyard home per test. ``database_url`` runs a test once on SQLite
and once on PostgreSQL (a new database per test on 127.0.0.1:5432). When ``CI`` is set an
unreachable PostgreSQL fails the run; elsewhere those tests skip and say what to start.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from shipyard.data import generate_fraud
from shipyard.examples import example_spec
from shipyard.inference import ExportedModel, export_model
from shipyard.pipeline import Runner, load_spec
from shipyard.registry import Registry
from shipyard.settings import Settings

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
IN_CI = bool(os.environ.get("CI"))
FEATURES = ["a", "b", "c", "d"]


def service_missing(what: str, start: str, error: Exception) -> None:
    """Fail in CI, skip elsewhere, when a real service the test needs is unreachable."""
    message = f"{what} is unreachable ({error}); start it with: {start}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


SERVICE_STARTS = {
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    "NATS": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    "RabbitMQ": "rabbitmq-server -detached",
}


def require_service(name: str, port: int) -> None:
    """Fail (CI) or skip (elsewhere) unless something listens on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as error:
        service_missing(f"{name} on 127.0.0.1:{port}", SERVICE_STARTS[name], error)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers come from where a test lives and what it needs."""
    for item in items:
        if "e2e" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.e2e)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A "figures" section with what tests recorded as ``record_property("figure", TEXT)``
    (failures counted under a fault, say), so that the CI log shows them for passing tests
    too; it works under xdist, as each report carries its properties from the worker."""
    lines = [
        f"{report.nodeid.split('::')[-1]}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "figure"
    ]
    if lines:
        terminalreporter.write_sep("-", "figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty registry database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    name = f"shipyard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as error:
        service_missing("PostgreSQL on 127.0.0.1:5432", POSTGRES_START, error)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def service() -> Callable[[str, int], None]:
    """``service("Redis", 6379)``: the test needs that broker; see ``require_service``."""
    return require_service


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty Shipyard home folder."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path, database_url: str) -> Settings:
    """Settings for a fresh home on each database backend."""
    return Settings(home=home, database_url=database_url)


@pytest.fixture
def sqlite_settings(home: Path) -> Settings:
    """Settings for a fresh home with the embedded SQLite database only."""
    return Settings(home=home)


@pytest.fixture(scope="session")
def exported_models() -> list[ExportedModel]:
    """Two ONNX logistic regressions over FEATURES, with different weights (so their
    artifact blobs differ)."""
    models = []
    for seed in (0, 1):
        x, y = make_classification(300, len(FEATURES), random_state=seed)
        fitted = LogisticRegression().fit(x, y)
        models.append(export_model(fitted, feature_names=FEATURES, task="classification"))
    return models


@pytest.fixture(scope="session")
def trained_model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with fraud:1 in production (6,000 training rows); copy it before changing."""
    home = tmp_path_factory.mktemp("served") / "home"
    data = home.parent / "train.parquet"
    generate_fraud(6000, seed=3).to_parquet(data)
    spec, text = load_spec(example_spec("fraud"))
    with Registry.open(Settings(home=home)) as registry:
        Runner(registry).run(spec.with_data_file(data), text)
    return home


@pytest.fixture
def model_home(trained_model_home: Path, tmp_path: Path) -> Path:
    """A private copy of the trained home."""
    copy = tmp_path / "home"
    shutil.copytree(trained_model_home, copy)
    return copy

"""Servers over a home that holds a trained fraud model (v1, production; ``model_home`` is in
the root conftest).

``client`` is an in-process TestClient (lifespan run); ``live_server`` is a real
``shipyard serve`` process on a free port of 127.0.0.1, for protocol clients and swaps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.children import Child
from shipyard.data import generate_fraud
from shipyard.examples import example_spec
from shipyard.pipeline import Runner, load_spec
from shipyard.registry import Registry
from shipyard.server.app import create_app
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

FEATURES = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]


@pytest.fixture
def server_settings(model_home: Path) -> Settings:
    """Settings of a server that loads fraud at start."""
    return Settings(home=model_home, serve_models=["fraud"], swap_poll_seconds=0.2)


@pytest.fixture
def client(server_settings: Settings) -> Iterator[TestClient]:
    """The app in-process, started (models loaded) and stopped around the test."""
    with TestClient(create_app(server_settings)) as test_client:
        yield test_client
        assert_trainings_ended(test_client)


def assert_trainings_ended(client: TestClient, timeout_s: float = 240) -> None:
    """Wait for the training children the in-process server started: a run is recorded
    finished a moment before its process exits, and a process still running when its handle
    is collected is a ResourceWarning in whichever later test collects it."""
    trainings = getattr(client.app.state, "trainings", None)
    if trainings is not None:
        assert trainings.wait(timeout_s) == []


@dataclass
class LiveServer:
    url: str
    host_port: str
    home: Path
    process: Child


@pytest.fixture
def live_server(model_home: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """``shipyard serve -m fraud`` as a real process; waits until ready, stops after."""
    with ServerProcess(Settings(home=model_home), log=tmp_path / "server.log") as server:
        yield LiveServer(server.url, f"127.0.0.1:{server.port}", model_home, server.process)


@pytest.fixture(scope="session")
def second_version_home(trained_model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained home plus fraud:2, trained on other data and not promoted: trained once
    a session, as a training run is most of a swap test's time (``register_v2`` copies it)."""
    home = tmp_path_factory.mktemp("second-version") / "home"
    shutil.copytree(trained_model_home, home)
    data = home.parent / "v2.parquet"
    generate_fraud(4000, seed=21).to_parquet(data)
    spec, text = load_spec(example_spec("fraud"))
    spec = spec.model_copy(
        update={"promotion": spec.promotion.model_copy(update={"require": "never"})}
    )
    with Registry.open(Settings(home=home)) as registry:
        result = Runner(registry).run(spec.with_data_file(data), text)
    assert result.version.version == 2
    return home


@pytest.fixture
def register_v2(second_version_home: Path) -> Callable[[Path], None]:
    """``register_v2(home)``: fraud:2 of ``second_version_home`` (its files, schemas,
    metrics, profile and tags) registered and signed in ``home``, without promoting it."""

    def register(home: Path) -> None:
        with Registry.open(Settings(home=second_version_home)) as source:
            trained = source.get_version("fraud:2")
            files = source.load_artifact("fraud:2").files
            profile = source.get_profile("fraud:2")
        with Registry.open(Settings(home=home)) as registry:
            registered = registry.register_version(
                "fraud",
                files=files,
                format=trained.format,
                input_schema=trained.input_schema,
                output_schema=trained.output_schema,
                metrics=trained.metrics,
                reference_profile=profile,
                tags=trained.tags,
            )
        assert registered.version == 2

    return register

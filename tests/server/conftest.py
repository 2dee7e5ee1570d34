"""Servers over a home that holds a trained fraud model (v1, production; ``model_home`` is in
the root conftest).

``client`` is an in-process TestClient (lifespan run); ``live_server`` is a real
``shipyard serve`` process on a free port of 127.0.0.1, for protocol clients and swaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.children import Child
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

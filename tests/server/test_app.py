"""The application as a whole: what ``GET /`` tells a person with curl."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard import __version__
from shipyard.server.app import LINKS, create_app
from shipyard.settings import Settings


def test_root_names_the_server_its_models_and_where_to_go(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "shipyard"
    assert body["version"] == __version__
    assert body["models"] == ["fraud"]
    assert body["default_model"] == "fraud"
    assert body["links"]["docs"] == "/docs"
    assert {"/v2", "/metrics"} <= set(body["links"].values())


def test_every_link_of_the_root_exists(client: TestClient) -> None:
    for link in LINKS.values():
        path = link.replace("{name}", "fraud")
        if path in ("/invocations", "/v1/models/fraud:predict"):
            assert client.post(path, json={"inputs": [[0.0] * 30]}).status_code == 200, path
        elif path == "/v1/models/fraud:classify":  # there, and asking for an image model
            response = client.post(path)
            assert response.status_code == 422, path
            assert "fraud is not an image model" in response.json()["error"]
        elif path == "/v1/models/fraud:evaluate":  # there, and asking for a table
            response = client.post(path)
            assert response.status_code == 415, path
            assert "with a field 'file'" in response.json()["error"], response.json()
        else:
            assert client.get(path).status_code == 200, path


@pytest.fixture
def guarded(model_home: Path) -> Iterator[TestClient]:
    settings = Settings(home=model_home, serve_models=["fraud"], protect_inference=True)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_guarded_server_keeps_its_model_names_for_callers_with_a_token(
    guarded: TestClient,
) -> None:
    body = guarded.get("/").json()
    assert body["name"] == "shipyard"
    assert "models" not in body
    assert body["links"] == LINKS


def test_the_server_imports_no_training_library() -> None:
    """``shipyard serve`` is ready in well under 2 s: scikit-learn, SciPy, skl2onnx, Dask and
    PyTorch (over a second together) are imported by what trains or evaluates, when it does."""
    training = ["dask", "distributed", "scipy", "skl2onnx", "sklearn", "torch"]
    script = (
        "import sys\n"
        "from shipyard.server.app import create_app\n"
        "from shipyard.settings import Settings\n"
        "create_app(Settings())\n"
        f"print(sorted(m for m in {training!r} if m in sys.modules), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr

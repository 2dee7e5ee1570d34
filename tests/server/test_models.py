"""The registry over HTTP, and auth on the real app: reads open, alias moves admin only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.registry import Registry, Users
from shipyard.server.app import create_app
from shipyard.settings import Settings

ROW = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30}]}


@pytest.fixture
def keys(model_home: Path) -> dict[str, str]:
    """An admin user and an API key per role."""
    with Registry.open(Settings(home=model_home)) as registry:
        users = Users(registry)
        users.add("ada", "correct horse battery", "admin")
        return {
            role: users.create_api_key(f"{role}-service", role)[1]
            for role in ("viewer", "operator", "admin")
        }


@pytest.fixture
def guarded(model_home: Path, keys: dict[str, str]) -> Iterator[TestClient]:
    settings = Settings(home=model_home, serve_models=["fraud"], protect_inference=True)
    with TestClient(create_app(settings)) as client:
        yield client


def test_read_routes_are_open(client: TestClient) -> None:
    listed = client.get("/v1/registry/models").json()["models"]
    assert [m["name"] for m in listed] == ["fraud"]
    assert listed[0]["aliases"] == {"production": 1}
    model = client.get("/v1/registry/models/fraud").json()
    assert [v["version"] for v in model["versions"]] == [1]
    version = client.get("/v1/registry/models/fraud/versions/1").json()
    assert version["ref"] == "fraud:1"
    assert len(version["manifest_digest"]) == 64
    assert client.get("/v1/registry/models/nope").status_code == 404
    assert client.get("/v1/registry/models/fraud/versions/9").status_code == 404


def test_promote_needs_admin(
    client: TestClient,
    model_home: Path,
    keys: dict[str, str],
    register_v2: Callable[[Path], None],
) -> None:
    register_v2(model_home)
    url = "/v1/registry/models/fraud/aliases/production"
    missing = client.post(url, json={"version": 2})
    assert missing.status_code == 401
    assert "WWW-Authenticate" in missing.headers
    assert "error" in missing.json()
    wrong_role = client.post(url, json={"version": 2}, headers={"X-API-Key": keys["operator"]})
    assert wrong_role.status_code == 403
    assert "needs admin" in wrong_role.json()["error"]
    bad = client.post(url, json={"version": 2}, headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401
    assert client.get("/v1/registry/models/fraud").json()["aliases"] == {"production": 1}

    token = client.post(
        "/v1/auth/token", data={"username": "ada", "password": "correct horse battery"}
    ).json()["access_token"]
    moved = client.post(url, json={"version": 2}, headers={"Authorization": f"Bearer {token}"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["aliases"] == ["production"]
    rolled = client.post(f"{url}/rollback", headers={"X-API-Key": keys["admin"]})
    assert rolled.status_code == 200
    assert rolled.json()["version"] == 1
    # Both moves are loop events, with who made them.
    events = client.get(
        "/v1/monitoring/models/fraud/events", headers={"X-API-Key": keys["admin"]}
    ).json()["events"]
    assert [(e["kind"], e["evidence"]["from"], e["evidence"]["to"]) for e in events] == [
        ("model.promoted", 1, 2),
        ("model.rolled_back", 2, 1),
    ]
    assert events[0]["evidence"]["actor"].endswith(":ada")
    assert events[1]["evidence"]["actor"] == "api_key:admin-service"


def test_promote_validates_its_body(client: TestClient, keys: dict[str, str]) -> None:
    url = "/v1/registry/models/fraud/aliases/production"
    headers = {"X-API-Key": keys["admin"]}
    assert client.post(url, json={"version": 0}, headers=headers).status_code == 422
    assert client.post(url, json={"version": 7}, headers=headers).status_code == 404
    assert client.post(url, content=b"{", headers=headers).status_code == 422


def test_rollback_without_history_is_409(client: TestClient, keys: dict[str, str]) -> None:
    response = client.post(
        "/v1/registry/models/fraud/aliases/production/rollback",
        headers={"X-API-Key": keys["admin"]},
    )
    assert response.status_code == 409
    assert "promote" in response.json()["error"]


def test_protected_inference_needs_any_role(guarded: TestClient, keys: dict[str, str]) -> None:
    assert guarded.post("/v2/models/fraud/infer", json=ROW).status_code == 401
    assert (
        guarded.post("/v1/models/fraud:predict", json={"inputs": [[0.0] * 30]}).status_code == 401
    )
    ok = guarded.post("/v2/models/fraud/infer", json=ROW, headers={"X-API-Key": keys["viewer"]})
    assert ok.status_code == 200
    # Probes stay open so orchestrators can check the server.
    assert guarded.get("/v2/health/ready").status_code == 200
    assert guarded.get("/ping").status_code == 200
    assert guarded.get("/metrics").status_code == 200


def test_openapi_shows_auth(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/auth/token" in spec["paths"]
    assert "/v2/models/{model}/infer" in spec["paths"]
    assert "securitySchemes" in spec["components"]

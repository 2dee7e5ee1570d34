"""The dashboard's page, its files and the traffic it samples: served from the package,
nothing from elsewhere, and its data behind a viewer login when inference is protected."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard import __version__
from shipyard.registry import Registry, Users
from shipyard.server.app import create_app
from shipyard.server.dashboard import ASSETS, HEADERS
from shipyard.settings import Settings

ROW = {"inputs": [[0.0] * 30]}
#: The only absolute URL the page's files may hold: the SVG namespace (an identifier).
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def test_the_page_and_each_of_its_files_are_served_with_their_type(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Shipyard dashboard</title>" in page.text
    for name, media_type in ASSETS.items():
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media_type
        assert response.content == (files("shipyard.server") / "ui" / name).read_bytes()
        for header, value in HEADERS.items():
            assert response.headers[header] == value
    assert client.head("/ui").status_code == 200


def test_the_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    """Offline: every script, style, image and request is the server's own (and the
    Content-Security-Policy would refuse anything else)."""
    referenced: set[str] = set()
    for name in ASSETS:
        text = client.get(f"/ui/{name}").text
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert not re.search(r"""(?:src|href)=["']//|url\(|@import""", text), name
        referenced |= set(re.findall(r'(?:src|href)="(/ui/[^"]+)"', text))
    assert referenced == {
        "/ui/favicon.svg",
        "/ui/dashboard.css",
        "/ui/charts.js",
        "/ui/dashboard.js",
    }
    for path in referenced:
        assert client.get(path).status_code == 200
    policy = HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert SVG_NAMESPACE in client.get("/ui/charts.js").text


def test_the_page_reads_only_routes_that_exist(client: TestClient) -> None:
    script = client.get("/ui/dashboard.js").text
    for path in re.findall(r'"(/v1/[a-z/]+)', script):
        # the route prefixes the page builds its URLs from
        probe = {
            "/v1/registry/models": "/v1/registry/models",
            "/v1/registry/models/": "/v1/registry/models/fraud",
            "/v1/monitoring/models/": "/v1/monitoring/models/fraud",
            "/v1/server/traffic": "/v1/server/traffic",
        }[path]
        assert client.get(probe).status_code == 200, probe


def test_anything_else_under_ui_is_404(client: TestClient) -> None:
    missing = client.get("/ui/nope.js")
    assert missing.status_code == 404
    assert "the dashboard has no file 'nope.js'" in missing.json()["error"]
    assert "open /ui" in missing.json()["error"]
    for path in ("/ui/..%2Fapp.py", "/ui/%2E%2E%2Fdashboard.py", "/ui/ui", "/ui/__init__.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"], path
    assert client.get("/ui/config/x").status_code == 404


def test_config_tells_the_page_whether_to_sign_in(client: TestClient) -> None:
    config = client.get("/ui/config").json()
    assert config["version"] == __version__
    assert config["protected"] is False
    assert config["token_url"] == "/v1/auth/token"
    assert config["refresh_seconds"] > 0
    assert config["traffic_seconds"] > 0


def test_traffic_counts_requests_errors_and_latency_per_route(client: TestClient) -> None:
    before = client.get("/v1/server/traffic").json()
    for _ in range(3):
        assert client.post("/v1/models/fraud:predict", json=ROW).status_code == 200
    assert client.post("/v1/models/fraud:predict", json={"inputs": [[0.0]]}).status_code == 400
    assert client.post("/v1/models/nope:predict", json=ROW).status_code == 404
    after = client.get("/v1/server/traffic").json()

    def route(document: dict[str, object], template: str) -> dict[str, object]:
        found = [r for r in document["routes"] if r["route"] == template]  # type: ignore[attr-defined]
        return found[0] if found else {"requests": 0, "client_errors": 0, "server_errors": 0}

    old, new = (route(d, "/v1/models/{name}:predict") for d in (before, after))
    assert new["inference"] is True
    assert new["requests"] - old["requests"] == 5  # type: ignore[operator]
    assert new["client_errors"] - old["client_errors"] == 2  # type: ignore[operator]
    assert new["server_errors"] - old["server_errors"] == 0  # type: ignore[operator]
    assert new["statuses"]["200"] >= 3  # type: ignore[index]
    latency = new["latency"]
    assert latency["count"] == new["requests"]  # type: ignore[index]
    counts = [count for _, count in latency["buckets"]]  # type: ignore[index]
    assert counts == sorted(counts)  # cumulative, as Prometheus keeps them
    assert latency["buckets"][-1] == [None, latency["count"]]  # type: ignore[index]
    assert latency["sum"] > 0  # type: ignore[index]
    assert route(after, "/v1/server/traffic")["inference"] is False
    # The counters are the process's: another test may have served fraud:2 before this one.
    [predicted] = [p for p in after["predictions"] if p["model"] == "fraud" and p["version"] == "1"]
    assert predicted["rows"] >= 3
    assert after["in_flight"] == 0


@pytest.fixture
def viewer_token(model_home: Path) -> Iterator[tuple[TestClient, str]]:
    """A server with protected inference and a viewer's token from the password flow."""
    with Registry.open(Settings(home=model_home)) as registry:
        Users(registry).add("vera", "a viewer password", "viewer")
    settings = Settings(home=model_home, serve_models=["fraud"], protect_inference=True)
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/auth/token", data={"username": "vera", "password": "a viewer password"}
        )
        assert answer.status_code == 200
        yield client, answer.json()["access_token"]


def test_when_protected_the_page_asks_for_a_login_and_the_data_for_a_viewer(
    viewer_token: tuple[TestClient, str],
) -> None:
    client, token = viewer_token
    # The page itself holds no data: it loads, says a login is needed, and shows the form.
    assert client.get("/ui").status_code == 200
    assert client.get("/ui/dashboard.js").status_code == 200
    assert client.get("/ui/config").json()["protected"] is True
    reads = [
        "/v1/registry/models",
        "/v1/registry/models/fraud",
        "/v1/monitoring/models/fraud",
        "/v1/monitoring/models/fraud/versions/1/history",
        "/v1/monitoring/models/fraud/events",
        "/v1/server/traffic",
    ]
    for path in reads:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert "WWW-Authenticate" in refused.headers
        assert client.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    wrong = client.post("/v1/auth/token", data={"username": "vera", "password": "wrong"})
    assert wrong.status_code == 401
    assert "error" in wrong.json()

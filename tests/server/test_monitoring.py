"""GET /v1/monitoring/models/{name}: what the monitor found, per version."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shipyard.registry import Registry
from shipyard.settings import Settings


def test_an_unknown_model_is_404_naming_it(client: TestClient) -> None:
    response = client.get("/v1/monitoring/models/nope")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_a_model_never_monitored_says_how_to_start(client: TestClient) -> None:
    response = client.get("/v1/monitoring/models/fraud")
    assert response.status_code == 200
    body = response.json()
    assert body["versions"] == []
    assert body["lease"] is None
    assert "shipyard monitor" in body["hint"]


def test_snapshots_events_feedback_and_lease_per_version(
    client: TestClient, server_settings: Settings
) -> None:
    with Registry.open(server_settings) as registry:
        store = registry.monitoring
        store.save_snapshot("fraud", 1, {"version": 1, "performance": {"all": {"labelled": 3}}})
        store.record_event("fraud", 1, "drift.detected", "drift.detected:v1:1", {"share": 0.6})
        store.acquire_lease("fraud", "host:1:abc", 30)
        store.add_feedback("fraud", [("a", "1"), ("b", "0")], source="http")
    body = client.get("/v1/monitoring/models/fraud", params={"events": 5}).json()
    assert "hint" not in body
    [version] = body["versions"]
    assert version["version"] == 1
    assert version["aliases"] == ["production"]
    assert version["snapshot"]["performance"]["all"]["labelled"] == 3
    assert [e["kind"] for e in version["events"]] == ["drift.detected"]
    assert version["events"][0]["evidence"] == {"share": 0.6}
    assert body["feedback"]["accepted"] == 2
    assert body["lease"]["owner"] == "host:1:abc"
    assert body["lease"]["fresh"] is True
    assert client.get("/v1/monitoring/models/fraud", params={"events": -1}).status_code == 422

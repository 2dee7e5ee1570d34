"""GET /v1/monitoring/models/{name}: what the monitor found, per version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from shipyard.registry import HistoryPoint, Registry
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


def _history(registry: Registry, version: int, start: datetime, count: int) -> None:
    registry.monitoring.commit_cycle(
        "fraud",
        statuses={},
        cursors={},
        snapshots={},
        history=[
            HistoryPoint(version, start + timedelta(minutes=i), {"rows_seen": 100 * i})
            for i in range(count)
        ],
    )


def test_a_versions_history_over_a_time_range(
    client: TestClient, server_settings: Settings
) -> None:
    start = datetime(2026, 11, 30, 8, tzinfo=UTC)
    with Registry.open(server_settings) as registry:
        _history(registry, 1, start, 4)
    url = "/v1/monitoring/models/fraud/versions/1/history"
    body = client.get(url).json()
    assert body["model"] == "fraud"
    assert body["version"] == 1
    assert body["aliases"] == ["production"]
    assert body["offline"]["average_precision"] > 0
    assert [p["rows_seen"] for p in body["points"]] == [0, 100, 200, 300]
    assert body["points"][0]["at"] == start.isoformat()
    ranged = client.get(
        url, params={"since": "2026-11-30T08:01:00Z", "until": "2026-11-30T09:03:00+01:00"}
    ).json()
    assert [p["rows_seen"] for p in ranged["points"]] == [100, 200]
    assert ranged["since"] == "2026-11-30T08:01:00+00:00"
    assert body["matched"] == 4
    latest = client.get(url, params={"limit": 1}).json()
    assert [p["rows_seen"] for p in latest["points"]] == [300]
    spread = client.get(url, params={"limit": 2}).json()  # thinned evenly, the newest kept
    assert [p["rows_seen"] for p in spread["points"]] == [100, 300]
    assert spread["matched"] == 4
    empty = client.get(url, params={"since": "2026-12-01T00:00:00Z"}).json()
    assert empty["points"] == []
    assert "shipyard monitor" in empty["hint"]


def test_history_refuses_what_it_cannot_answer(client: TestClient) -> None:
    base = "/v1/monitoring/models"
    unknown_model = client.get(f"{base}/nope/versions/1/history")
    assert unknown_model.status_code == 404
    assert "nope" in unknown_model.json()["error"]
    unknown_version = client.get(f"{base}/fraud/versions/9/history")
    assert unknown_version.status_code == 404
    assert "9" in unknown_version.json()["error"]
    assert client.get(f"{base}/fraud/versions/0/history").status_code == 422
    assert client.get(f"{base}/fraud/versions/x/history").status_code == 422
    url = f"{base}/fraud/versions/1/history"
    naive = client.get(url, params={"since": "2026-11-30T08:00:00"})
    assert naive.status_code == 400
    assert "has no time zone" in naive.json()["error"]
    assert "2026-11-30T08:00:00Z" in naive.json()["error"]
    backwards = client.get(
        url, params={"since": "2026-11-30T09:00:00Z", "until": "2026-11-30T08:00:00Z"}
    )
    assert backwards.status_code == 400
    assert "must be after since" in backwards.json()["error"]
    assert client.get(url, params={"since": "yesterday"}).status_code == 422
    assert client.get(url, params={"limit": 0}).status_code == 422
    assert client.get(url, params={"limit": 5001}).status_code == 422


def test_a_models_events_by_time_and_kind(client: TestClient, server_settings: Settings) -> None:
    with Registry.open(server_settings) as registry:
        store = registry.monitoring
        store.record_event("fraud", 1, "drift.detected", "drift.detected:v1:1", {"share": 0.6})
        store.record_event("fraud", 1, "drift.cleared", "drift.cleared:v1:1", {})
        store.record_event("fraud", None, "retrain.skipped", "retrain.skipped:1", {"why": "x"})
        recorded = store.events("fraud")
    url = "/v1/monitoring/models/fraud/events"
    body = client.get(url).json()
    assert body["model"] == "fraud"
    assert [e["kind"] for e in body["events"]] == [
        "drift.detected",
        "drift.cleared",
        "retrain.skipped",
    ]
    assert body["events"][0]["evidence"] == {"share": 0.6}
    assert body["events"][2]["version"] is None
    assert body["events"][0]["at"] == recorded[0].at.isoformat()
    since = client.get(url, params={"since": recorded[1].at.isoformat()}).json()
    assert [e["kind"] for e in since["events"]] == ["drift.cleared", "retrain.skipped"]
    until = client.get(url, params={"until": recorded[1].at.isoformat()}).json()
    assert [e["kind"] for e in until["events"]] == ["drift.detected"]
    kind = client.get(url, params={"kind": "drift.cleared"}).json()
    assert [e["kind"] for e in kind["events"]] == ["drift.cleared"]
    latest = client.get(url, params={"limit": 2}).json()  # the latest two, oldest first
    assert [e["kind"] for e in latest["events"]] == ["drift.cleared", "retrain.skipped"]
    assert client.get("/v1/monitoring/models/nope/events").status_code == 404
    assert client.get(url, params={"limit": 0}).status_code == 422
    assert client.get(url, params={"since": "2026-11-30T08:00:00"}).status_code == 400

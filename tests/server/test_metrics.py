"""``/metrics``: Prometheus text with bounded labels (route templates, never raw paths)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shipyard import __version__
from shipyard.registry import Registry
from shipyard.server import metrics
from shipyard.server.app import _hooks, create_app
from shipyard.settings import Settings

from .test_bad_input import ROW, VALUES, tensor


def samples(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of /metrics by sample name."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(client: TestClient, name: str, **labels: str) -> float:
    """One sample's value, 0 if it is not there yet."""
    for sample_labels, sample_value in samples(client).get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return 0.0


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    infer = {"route": "/v2/models/{model}/infer", "status": "200"}
    before = value(client, "shipyard_http_requests_total", **infer)
    for _ in range(3):
        assert client.post("/v2/models/fraud/infer", json=tensor()).status_code == 200
    assert client.post("/v2/models/fraud/versions/1/infer", json=tensor()).status_code == 200
    assert client.post("/v1/models/fraud:predict", json={"instances": [ROW]}).status_code == 200
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/no/such/path/123").status_code == 404

    assert value(client, "shipyard_http_requests_total", **infer) == before + 3
    found = samples(client)
    routes = {labels["route"] for labels, _ in found["shipyard_http_requests_total"]}
    assert "/v2/models/{model}/versions/{version}/infer" in routes
    assert "/v1/models/{name}:predict" in routes
    assert "/v2/models/{model}" in routes
    assert "unmatched" in routes
    for route in routes:  # no raw path, no id: the label set stays bounded
        assert not [raw for raw in ("fraud", "nope", "123") if raw in route], route
    durations = {
        labels["route"] for labels, _ in found["shipyard_http_request_duration_seconds_count"]
    }
    assert "/v2/models/{model}/infer" in durations
    assert value(client, "shipyard_http_request_duration_seconds_count", route=infer["route"]) >= 3


def test_batches_are_observed_per_model_version(client: TestClient) -> None:
    labels = {"model": "fraud", "version": "1"}
    before = value(client, "shipyard_batch_size_rows_sum", **labels)
    response = client.post("/invocations", json={"inputs": [VALUES] * 7})
    assert response.status_code == 200
    assert value(client, "shipyard_batch_size_rows_sum", **labels) == before + 7
    assert value(client, "shipyard_batch_size_rows_count", **labels) >= 1
    assert value(client, "shipyard_predictions_total", **labels) >= 7


def test_build_info(client: TestClient) -> None:
    assert value(client, "shipyard_build_info", version=__version__) == 1


def test_a_model_that_cannot_load_is_counted_and_not_ready(
    client: TestClient, model_home: Path
) -> None:
    with Registry.open(Settings(home=model_home)) as registry:
        manifest = registry.load_artifact("fraud:1").manifest
        registry.register_version(
            "broken",
            files={"model.onnx": b"not an onnx graph"},
            format="onnx",
            input_schema=manifest.input_schema,
            output_schema=manifest.output_schema,
            metrics={},
        )
    before = value(client, "shipyard_model_load_failures_total", model="broken")
    response = client.get("/v2/models/broken/versions/1/ready")
    assert response.status_code == 503
    assert response.json() == {"name": "broken", "ready": False}
    assert value(client, "shipyard_model_load_failures_total", model="broken") == before + 1
    # the models that load are unaffected
    assert client.post("/v2/models/fraud/infer", json=tensor()).status_code == 200


def test_a_model_whose_predictions_are_logged_has_a_dropped_count_at_zero() -> None:
    """Written rows bring the dropped count along at 0, so a dashboard or an alert on drops
    reads 0 rather than no data before the first drop."""
    model = "logged-without-drops"  # the registry is the process's: a name no test uses
    metrics.prediction_log_written(model, 5)
    metrics.prediction_log_written(model, 2)
    assert REGISTRY.get_sample_value("shipyard_prediction_log_rows_total", {"model": model}) == 7
    dropped = REGISTRY.get_sample_value("shipyard_prediction_log_dropped_total", {"model": model})
    assert dropped == 0


def test_rows_a_shadow_drops_are_counted_per_model() -> None:
    """The service's shadow_dropped hook, as the server wires it, feeds the counter."""
    model = "shadow-drops"  # the registry is the process's: a name no test uses
    hooks = _hooks()
    hooks.shadow_dropped(model, 3)
    hooks.shadow_dropped(model, 2)
    assert REGISTRY.get_sample_value("shipyard_shadow_dropped_total", {"model": model}) == 5


def sample(name: str, **labels: str) -> float:
    """A sample of this process's Prometheus registry as it is (nothing flushed first)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_tally_adds_requests_up_as_one_by_one_updates_would() -> None:
    route = "/test/tally/{thing}"
    tally = metrics.RequestTally()
    for _ in range(3):
        tally.begin()
    for seconds in (0.0002, 0.003, 0.003):
        tally.end(route, 200, seconds)
    tally.begin()
    tally.end(route, 503, 0.7)
    assert sample("shipyard_http_requests_total", route=route, status="200") == 0  # not yet
    tally.flush()
    assert sample("shipyard_http_requests_total", route=route, status="200") == 3
    assert sample("shipyard_http_requests_total", route=route, status="503") == 1
    assert sample("shipyard_http_request_duration_seconds_count", route=route) == 4
    assert sample("shipyard_http_request_duration_seconds_sum", route=route) == pytest.approx(
        0.7062
    )
    for le, count in (("0.0005", 1), ("0.0025", 1), ("0.005", 3), ("0.5", 3), ("1.0", 4)):
        bucket = sample("shipyard_http_request_duration_seconds_bucket", route=route, le=le)
        assert bucket == count, le
    tally.begin()  # one in flight, counted when the tally is flushed
    tally.flush()
    assert sample("shipyard_http_requests_in_flight") == 1
    tally.end(route, 200, 0.001)
    tally.flush()
    assert sample("shipyard_http_requests_in_flight") == 0
    tally.flush()  # nothing new: nothing changes
    assert sample("shipyard_http_requests_total", route=route, status="200") == 4


def test_a_full_tally_adds_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "FLUSH_AFTER", 5)
    route = "/test/full-tally"
    tally = metrics.RequestTally()
    for count in range(1, 11):
        tally.begin()
        tally.end(route, 200, 0.001)
        assert sample("shipyard_http_requests_total", route=route, status="200") == (count // 5 * 5)


def test_a_running_server_adds_its_requests_up_unasked(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What another worker's /metrics reads (in multiprocess mode) comes without a scrape
    # of this one.
    monkeypatch.setattr(metrics, "FLUSH_INTERVAL_S", 0.05)
    infer = {"route": "/v2/models/{model}/infer", "status": "200"}
    with TestClient(create_app(server_settings)) as client:
        metrics.TALLY.flush()
        before = sample("shipyard_http_requests_total", **infer)
        for _ in range(3):
            assert client.post("/v2/models/fraud/infer", json=tensor()).status_code == 200
        deadline = time.monotonic() + 10
        while sample("shipyard_http_requests_total", **infer) < before + 3:
            assert time.monotonic() < deadline, "the requests never reached the registry"
            time.sleep(0.02)
        assert sample("shipyard_http_requests_total", **infer) == before + 3

"""Ground truth over HTTP: POST /v1/feedback (operator role)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.registry import Registry, Users
from shipyard.server.app import create_app
from shipyard.settings import Settings


@pytest.fixture
def keys(model_home: Path) -> dict[str, str]:
    """An API key per role."""
    with Registry.open(Settings(home=model_home)) as registry:
        users = Users(registry)
        return {
            role: users.create_api_key(f"{role}-service", role)[1]
            for role in ("viewer", "operator", "admin")
        }


@pytest.fixture
def operator(keys: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": keys["operator"]}


@pytest.fixture
def bare(model_home: Path) -> Iterator[TestClient]:
    """A server with no default model and batches of at most 3 items."""
    settings = Settings(home=model_home, max_feedback_items=3)
    with TestClient(create_app(settings)) as client:
        yield client


def stored(home: Path) -> list[tuple[str, str, str]]:
    with Registry.open(Settings(home=home)) as registry:
        return [(r.id, r.label, r.source) for r in registry.monitoring.feedback_after("fraud", 0)]


def test_an_operator_sends_labels_and_gets_a_receipt(
    client: TestClient, operator: dict[str, str], model_home: Path
) -> None:
    batch = [{"id": "tx-1", "label": 1}, {"id": "tx-2", "label": False}]
    body = {"model": "fraud", "feedback": batch}
    answer = client.post("/v1/feedback", json=body, headers=operator)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {k: body[k] for k in ("model", "received", "accepted", "duplicates")} == {
        "model": "fraud",
        "received": 2,
        "accepted": 2,
        "duplicates": [],
    }
    assert body["counts"] == "/v1/monitoring/models/fraud"
    assert "GET /v1/monitoring/models/fraud" in body["note"]

    # The model may be left out: the server's default model (the first of --models).
    again = [{"id": "tx-2", "label": 1}, {"id": "tx-3", "label": "0"}]
    answer = client.post("/v1/feedback", json={"feedback": again}, headers=operator)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["duplicates"]) == (1, ["tx-2"])
    assert stored(model_home) == [
        ("tx-1", "1", "http"),
        ("tx-2", "0", "http"),
        ("tx-3", "0", "http"),
    ]


def test_feedback_needs_the_operator_role(client: TestClient, keys: dict[str, str]) -> None:
    body = {"feedback": [{"id": "tx-1", "label": 1}]}
    assert client.post("/v1/feedback", json=body).status_code == 401
    answer = client.post("/v1/feedback", json=body, headers={"X-API-Key": keys["viewer"]})
    assert answer.status_code == 403
    answer = client.post("/v1/feedback", json=body, headers={"X-API-Key": keys["admin"]})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"feedback": [', 400, "malformed JSON"),
        (b'[{"id": "a", "label": 1}]', 400, "the body must be a JSON object"),
        (b'{"feedback": [], "extra": 1}', 400, "unknown fields extra"),
        (b'{"model": "fraud"}', 400, "no `feedback` list"),
        (b'{"feedback": []}', 400, "the `feedback` list is empty"),
        (b'{"feedback": {"id": "a"}}', 400, "a list of"),
        (b'{"model": 3, "feedback": []}', 400, "`model` must be a model name"),
        (b'{"model": "no such", "feedback": []}', 400, "not a model reference"),
        (b'{"model": "nope", "feedback": [{"id": "a", "label": 1}]}', 404, "no model named"),
        (b'{"feedback": [{"label": 1}]}', 400, "feedback item 0 has no `id` string"),
        (b'{"feedback": [{"id": "a", "label": 1}, {"id": 5.5, "label": 1}]}', 400, "item 1 has"),
        (
            b'{"feedback": [{"id": "a", "label": 1}, {"id": "tx-9", "label": "yes"}]}',
            400,
            "feedback for id 'tx-9': the label 'yes' is not a class of fraud",
        ),
        (b'{"feedback": [{"id": "tx-9", "label": 0.5}]}', 400, "id 'tx-9': the label 0.5"),
        (b'{"feedback": [{"id": "tx-9", "label": null}]}', 400, "id 'tx-9': the label None"),
        (b'{"feedback": [{"id": "tx-9", "label": {"a": 1}}]}', 400, "id 'tx-9'"),
    ],
)
def test_bad_feedback_is_refused_whole_with_a_reason(
    client: TestClient,
    operator: dict[str, str],
    model_home: Path,
    body: bytes,
    status: int,
    message: str,
) -> None:
    headers = {**operator, "Content-Type": "application/json"}
    answer = client.post("/v1/feedback", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert stored(model_home) == []


def test_a_body_that_is_not_json_is_refused(client: TestClient, operator: dict[str, str]) -> None:
    headers = {**operator, "Content-Type": "text/csv"}
    answer = client.post("/v1/feedback", content=b"id,label\na,1\n", headers=headers)
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]


def test_without_a_default_model_the_model_must_be_named(
    bare: TestClient, operator: dict[str, str]
) -> None:
    unnamed = {"feedback": [{"id": "a", "label": 1}]}
    answer = bare.post("/v1/feedback", json=unnamed, headers=operator)
    assert answer.status_code == 400
    assert "name the model" in answer.json()["error"]
    named = {"model": "fraud", "feedback": [{"id": "a", "label": 1}]}
    assert bare.post("/v1/feedback", json=named, headers=operator).status_code == 200


def test_a_batch_over_the_limit_is_refused_naming_it(
    bare: TestClient, operator: dict[str, str], model_home: Path
) -> None:
    batch: list[dict[str, Any]] = [{"id": f"tx-{i}", "label": 1} for i in range(4)]
    answer = bare.post("/v1/feedback", json={"model": "fraud", "feedback": batch}, headers=operator)
    assert answer.status_code == 413
    assert "send at most 3 per batch" in answer.json()["error"]
    assert stored(model_home) == []


def test_the_route_is_documented_with_an_example(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/feedback"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["example"]["feedback"][0] == {"id": "tx-1", "label": 1}
    assert {"200", "400", "404", "413"} <= set(operation["responses"])
    assert operation["tags"] == ["monitoring"]

"""``ShipyardApp``: the inference routes answered ahead of the middleware stack behave as the
stack would answer them (metrics, errors, body limit), and everything else still goes
through the stack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect
from starlette.types import Message

from shipyard.server import mlflow, oip
from shipyard.server.app import create_app
from shipyard.server.hot import ReadRequest, read_body
from shipyard.settings import Settings

from .test_bad_input import tensor
from .test_metrics import value

INFER = "/v2/models/{model}/infer"


def count(client: TestClient, route: str, status: str) -> float:
    return value(client, "shipyard_http_requests_total", route=route, status=status)


def test_the_inference_routes_are_answered_ahead_of_the_stack(client: TestClient) -> None:
    app = client.app
    assert [route.template for route in app.hot] == [  # type: ignore[attr-defined]
        INFER,
        "/v2/models/{model}/versions/{version}/infer",
        "/invocations",
        "/v1/models/{name}:predict",
        "/v1/models/{name}:classify",
    ]


def test_answers_errors_and_metrics_are_those_of_the_stack(client: TestClient) -> None:
    before = {status: count(client, INFER, status) for status in ("200", "400", "404", "415")}
    latency_before = value(client, "shipyard_http_request_duration_seconds_count", route=INFER)

    ok = client.post("/v2/models/fraud/infer", json=tensor())
    bad = client.post("/v2/models/fraud/infer", content=b"{not json")
    unknown = client.post("/v2/models/nope/infer", json=tensor())
    plain = client.post(
        "/v2/models/fraud/infer", content=b"a,b", headers={"content-type": "text/csv"}
    )

    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/json"
    assert ok.json()["model_name"] == "fraud"
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("malformed JSON")
    assert unknown.status_code == 404
    assert set(unknown.json()) == {"error"}
    assert plain.status_code == 415
    assert "not accepted here" in plain.json()["error"]
    for status in ("200", "400", "404", "415"):
        assert count(client, INFER, status) == before[status] + 1
    latency_after = value(client, "shipyard_http_request_duration_seconds_count", route=INFER)
    assert latency_after == latency_before + 4
    assert value(client, "shipyard_http_requests_in_flight") == 1  # the /metrics request


def test_other_methods_on_an_inference_path_go_through_the_stack(client: TestClient) -> None:
    response = client.get("/v2/models/fraud/infer")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert set(response.json()) == {"error"}


def test_a_path_under_a_root_path_is_matched_as_the_router_matches_it(
    server_settings: Settings,
) -> None:
    with TestClient(create_app(server_settings), root_path="/api") as client:
        response = client.post("/api/v2/models/fraud/infer", json=tensor())
    assert response.status_code == 200, response.text
    assert response.json()["model_name"] == "fraud"


@pytest.fixture
def failing_client(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """A server whose OIP and MLflow handlers fail in a way no handler foresees."""

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(oip, "infer_endpoint", broken)
    monkeypatch.setattr(mlflow, "invocations", broken)
    with TestClient(create_app(server_settings), raise_server_exceptions=False) as client:
        yield client


def test_an_unforeseen_error_is_a_plain_500_and_counted(failing_client: TestClient) -> None:
    before = count(failing_client, "/invocations", "500")
    response = failing_client.post("/invocations", json={"instances": [[0.0]]})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert count(failing_client, "/invocations", "500") == before + 1


def test_the_unforeseen_error_reaches_the_server(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(oip, "infer_endpoint", broken)
    with (
        TestClient(create_app(server_settings)) as client,
        pytest.raises(RuntimeError, match="a bug"),
    ):
        client.post("/v2/models/fraud/infer", json=tensor())


def test_protected_inference_goes_through_the_stack_and_its_role_check(
    model_home: Path,
) -> None:
    settings = Settings(home=model_home, serve_models=["fraud"], protect_inference=True)
    with TestClient(create_app(settings)) as client:
        assert not client.app.hot  # type: ignore[attr-defined]
        response = client.post("/v2/models/fraud/infer", json=tensor())
    assert response.status_code == 401


def body_in(*chunks: bytes) -> Any:
    """A ``receive`` giving these chunks, then the client leaving."""
    messages = iter(
        [{"type": "http.request", "body": c, "more_body": True} for c in chunks[:-1]]
        + [{"type": "http.request", "body": chunks[-1], "more_body": False}]
    )

    async def receive() -> Message:
        return next(messages, {"type": "http.disconnect"})

    return receive


def test_a_body_in_chunks_is_read_whole() -> None:
    assert asyncio.run(read_body(body_in(b'{"in', b"", b'puts": []}'))) == b'{"inputs": []}'
    assert asyncio.run(read_body(body_in(b"one"))) == b"one"


def test_a_client_gone_before_its_body_is_not_waited_for() -> None:
    messages = iter(
        [
            {"type": "http.request", "body": b"{", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> Message:
        return next(messages)

    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(receive))


def test_a_read_request_reads_its_body_once_for_every_reader() -> None:
    async def read() -> list[Any]:
        request = ReadRequest({"type": "http", "headers": []}, body_in(b"a", b"bc"))
        return [await request.body(), [c async for c in request.stream()], await request.body()]

    assert asyncio.run(read()) == [b"abc", [b"abc", b""], b"abc"]


@pytest.mark.parametrize(
    ("path", "content_type", "status"),
    [
        ("/v2/models/fraud/infer", "text/plain", 415),
        ("/v2/models/fraud/versions/abc/infer", "application/json", 400),
        ("/v1/models/fraud:predict", "text/plain", 415),
    ],
)
def test_a_request_refused_before_its_body_is_refused_as_before(
    server_settings: Settings, path: str, content_type: str, status: int
) -> None:
    # The endpoint reads the body when it gets to it: an oversized body sent in chunks
    # (no Content-Length) does not turn an earlier refusal into a 413.
    settings = server_settings.model_copy(update={"max_body_bytes": 2000})
    with TestClient(create_app(settings)) as client:
        response = client.post(
            path, content=iter([b"x" * 1500] * 2), headers={"content-type": content_type}
        )
    assert response.status_code == status, response.text

"""POST /v1/pipelines/{name}/runs with ``submit``: the run goes on the broker for the stage
workers instead of a child process; GET follows it to its version as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.data import generate_fraud
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.pipeline.workers import WorkerConfig
from shipyard.registry import Registry, Users
from shipyard.server.app import create_app
from shipyard.settings import Settings
from stage_runs import SMALL_SPEC, running_worker, until_ended


@pytest.fixture
def operator(model_home: Path) -> dict[str, str]:
    with Registry.open(Settings(home=model_home)) as registry:
        return {"X-API-Key": Users(registry).create_api_key("ops", "operator")[1]}


@pytest.fixture
def broker(model_home: Path) -> Iterator[str]:
    """The home's embedded NATS server, kept up for the test (the server reuses it)."""
    with EmbeddedNats(model_home) as url:
        yield url


def work_off(settings: Settings, url: str, run_id: str) -> str:
    """Run a stage worker until the run ends; its status."""

    async def main() -> str:
        with Registry.open(settings) as registry:
            config = WorkerConfig(worker="test:1", poll_ms=100)
            async with running_worker(url, registry, config):
                return (await until_ended(registry, run_id)).status

    return asyncio.run(main())


def test_a_submitted_upload_runs_on_the_stage_workers(
    model_home: Path, operator: dict[str, str], broker: str
) -> None:
    settings = Settings(home=model_home, serve_models=["fraud"])
    table = generate_fraud(2000, seed=5).to_csv(index=False).encode()
    files = {
        "spec": ("pipeline.yaml", SMALL_SPEC),
        "data": ("fraud.csv", table, "text/csv"),
        "submit": (None, "true"),
    }
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/pipelines/fraud/runs", files=files, headers=operator)
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert (body["status"], body["runs_on"]) == ("queued", "stage workers")
        assert not (model_home / "runs").exists()  # no child process
        assert work_off(settings, broker, body["id"]) == "succeeded"
        run = client.get(answer.headers["location"]).json()
    assert run["status"] == "succeeded", run["error"]
    assert run["version"]["ref"] == "fraud:2"
    assert {stage["status"] for stage in run["stages"]} == {"succeeded"}


def test_the_setting_makes_submit_the_default_and_a_request_overrides_it(
    model_home: Path, operator: dict[str, str], broker: str
) -> None:
    settings = Settings(home=model_home, serve_models=["fraud"], pipeline_submit=True)
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/pipelines/fraud/runs", json={"spec": SMALL_SPEC}, headers=operator
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["runs_on"] == "stage workers"
        assert work_off(settings, broker, answer.json()["id"]) == "succeeded"
        bad = client.post(
            "/v1/pipelines/fraud/runs", json={"spec": SMALL_SPEC, "submit": "yes"}, headers=operator
        )
        assert bad.status_code == 400
        assert "\"submit\" is true or false, not 'yes'" in bad.json()["error"]
        form = client.post(
            "/v1/pipelines/fraud/runs",
            files={"spec": (None, SMALL_SPEC), "submit": (None, "maybe")},
            headers=operator,
        )
        assert form.status_code == 400
        assert "form field `submit` is true or false" in form.json()["error"]

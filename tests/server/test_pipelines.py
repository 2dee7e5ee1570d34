"""Training over HTTP: POST /v1/pipelines/{name}/runs (operator) queues a run trained by a
child process; GET /v1/pipelines/runs/{id} follows it to its version."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from shipyard.data import generate_fraud
from shipyard.examples import example_spec
from shipyard.registry import Registry, Users
from shipyard.server.app import create_app
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

from .conftest import assert_trainings_ended

STAGES = ["ingest", "validate", "split", "train", "evaluate", "export", "register", "promote"]
SPEC = example_spec("fraud").read_text()
#: Seconds a test waits for a training child at most (a few seconds when the machine is idle).
TRAINING_S = 240


@pytest.fixture(scope="module")
def table() -> bytes:
    """3,000 labelled transactions as CSV, the table the runs here train on."""
    return generate_fraud(3000, seed=5).to_csv(index=False).encode()


@pytest.fixture
def keys(model_home: Path) -> dict[str, str]:
    """An API key per role."""
    with Registry.open(Settings(home=model_home)) as registry:
        users = Users(registry)
        return {
            role: users.create_api_key(f"{role}-service", role)[1]
            for role in ("viewer", "operator")
        }


@pytest.fixture
def operator(keys: dict[str, str]) -> dict[str, str]:
    return {"X-API-Key": keys["operator"]}


def runs_of(home: Path, name: str = "fraud") -> list[str]:
    with Registry.open(Settings(home=home)) as registry:
        return [run.id for run in registry.runs.recent(name)]


def stop_training(home: Path, run_id: str) -> int:
    """SIGKILL the training child of ``run_id`` (named in its owner file); its pid."""
    pid = int(json.loads((home / "runs" / f"{run_id}.json").read_text())["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def follow(client: TestClient | httpx.Client, location: str) -> dict[str, Any]:
    """The run at ``location`` once it has finished (the route waits for it)."""
    answer = client.get(location, params={"wait": TRAINING_S})
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()
    assert run["status"] in ("succeeded", "failed"), run
    return run


def test_an_operator_trains_from_an_upload_and_follows_the_run_to_its_version(
    client: TestClient, operator: dict[str, str], model_home: Path, table: bytes
) -> None:
    before = runs_of(model_home)
    files = {"spec": ("pipeline.yaml", SPEC), "data": ("fraud.csv", table, "text/csv")}
    answer = client.post("/v1/pipelines/fraud/runs", files=files, headers=operator)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    assert answer.headers["location"] == f"/v1/pipelines/runs/{run_id}"
    assert answer.json()["status"] == "queued"
    assert runs_of(model_home) == [run_id, *before]

    run = follow(client, answer.headers["location"])
    assert run["status"] == "succeeded", run["error"]
    assert [s["name"] for s in run["stages"]] == STAGES
    assert {s["status"] for s in run["stages"]} == {"succeeded"}
    assert run["version"]["ref"] == "fraud:2"
    assert run["version"]["run_id"] == run_id
    assert set(run["metrics"]) >= {"average_precision", "roc_auc", "f1"}
    assert "learners" not in run  # not an ensemble
    # The upload is kept by its digest, which is the run's dataset digest.
    digest = hashlib.sha256(table).hexdigest()
    assert run["dataset_sha256"] == digest
    assert run["data"] == {"path": str((model_home / "uploads" / f"{digest}.csv").absolute())}
    assert (model_home / "runs" / f"{run_id}.log").is_file()

    listed = client.get("/v1/pipelines/fraud/runs", params={"limit": 1}).json()
    assert [(r["id"], r["version"]["ref"]) for r in listed["runs"]] == [(run_id, "fraud:2")]


def test_an_empty_body_trains_again_on_the_last_runs_spec_and_data(
    client: TestClient, operator: dict[str, str], model_home: Path
) -> None:
    with Registry.open(Settings(home=model_home)) as registry:
        (last,) = registry.runs.recent("fraud")
        last_text = registry.runs.spec_text(last.id)
    answer = client.post("/v1/pipelines/fraud/runs", headers=operator)
    assert answer.status_code == 202, answer.text
    run = follow(client, answer.headers["location"])
    assert run["status"] == "succeeded", run["error"]
    assert run["data"] == last.params["data"]
    assert run["dataset_sha256"] == last.dataset_sha256
    assert run["version"]["ref"] == "fraud:2"
    with Registry.open(Settings(home=model_home)) as registry:
        assert registry.runs.spec_text(run["id"]) == last_text


def test_a_training_process_that_dies_fails_its_run_with_its_log(
    client: TestClient, operator: dict[str, str], model_home: Path
) -> None:
    generating = SPEC.replace("rows: 60000", "rows: 3000")
    answer = client.post("/v1/pipelines/fraud/runs", json={"spec": generating}, headers=operator)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    pid = stop_training(model_home, run_id)  # before it records anything but, maybe, its start
    run = follow(client, answer.headers["location"])
    assert run["status"] == "failed"
    assert f"the training process (pid {pid} on " in run["error"]
    assert f"{run_id}.log" in run["error"]
    assert not (model_home / "runs" / f"{run_id}.json").exists()  # judged once
    assert run["version"] is None


def test_a_table_alone_trains_the_last_runs_spec_on_it(
    client: TestClient, operator: dict[str, str], model_home: Path, table: bytes
) -> None:
    with Registry.open(Settings(home=model_home)) as registry:
        (last,) = registry.runs.recent("fraud")
        last_text = registry.runs.spec_text(last.id)
    files = {"data": ("fraud.parquet", _parquet(table))}
    answer = client.post("/v1/pipelines/fraud/runs", files=files, headers=operator)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    # Stopped at once: what matters is what was queued, not another training.
    stop_training(model_home, run_id)
    with Registry.open(Settings(home=model_home)) as registry:
        run = registry.runs.get(run_id)
        assert registry.runs.spec_text(run_id) == last_text
    stored = run.params["data"]["path"]
    assert stored.endswith(".parquet")
    assert stored != last.params["data"]["path"]
    assert Path(stored).read_bytes() == _parquet(table)
    assert follow(client, answer.headers["location"])["status"] == "failed"


@pytest.fixture
def small(model_home: Path) -> Iterator[TestClient]:
    """A server whose request bodies may hold at most 2,000 bytes."""
    with TestClient(create_app(Settings(home=model_home, max_body_bytes=2000))) as client:
        yield client
        assert_trainings_ended(client)


def _parquet(frame_bytes: bytes) -> bytes:
    import pandas as pd

    out = io.BytesIO()
    pd.read_csv(io.BytesIO(frame_bytes)).to_parquet(out)
    return out.getvalue()


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "named otherwise",
        {"files": {"spec": SPEC.replace("name: fraud", "name: other")}},
        400,
        "the spec is named 'other', not 'fraud'",
    ),
    ("not YAML", {"files": {"spec": "name: [fraud"}}, 400, "not valid YAML"),
    (
        "an invalid spec",
        {"files": {"spec": SPEC.replace("task: classification", "task: x")}},
        400,
        "task",
    ),
    (
        "a JSON table",
        {"files": {"spec": SPEC, "data": ("t.json", b'{"a": 1}')}},
        415,
        "t.json (application/json) is not a CSV or Parquet table",
    ),
    (
        "an untyped table",
        {"files": {"spec": SPEC, "data": ("t", b"a,b\n1,2\n")}},
        415,
        "is not a CSV or Parquet table",
    ),
    ("an empty table", {"files": {"spec": SPEC, "data": ("t.csv", b"")}}, 400, "t.csv is empty"),
    (
        "a header only",
        {"files": {"spec": SPEC, "data": ("t.csv", b"Time,V1\n")}},
        400,
        "t.csv has no rows",
    ),
    (
        "broken Parquet",
        {"files": {"spec": SPEC, "data": ("t.parquet", b"PAR1 nonsense")}},
        400,
        "cannot read t.parquet as Parquet",
    ),
    ("no target", {"files": {"spec": SPEC, "data": ("t.csv", b"Time,V1\n1,2\n")}}, 422, "Class"),
    (
        "a text field as data",
        {"files": {"spec": (None, SPEC), "data": (None, "a,b")}},
        400,
        "multipart field 'data' must be a file",
    ),
    (
        "an unknown field",
        {"files": {"spec": SPEC, "table": ("t.csv", b"a\n1\n")}},
        400,
        "unknown multipart fields table",
    ),
    ("a JSON body without a spec", {"json": {"data": "x"}}, 400, '{"spec": '),
    (
        "a JSON spec with a server path",
        {
            "json": {
                "spec": SPEC.replace(
                    "generate: {dataset: fraud, rows: 60000, seed: 7}", "path: /etc/passwd"
                )
            }
        },
        400,
        "the spec reads data.path '/etc/passwd'",
    ),
    (
        "malformed JSON",
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
        400,
        "malformed JSON",
    ),
    (
        "a text body",
        {"content": b"name: fraud", "headers": {"Content-Type": "text/plain"}},
        415,
        "content type 'text/plain' is not accepted here",
    ),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        pytest.param(kwargs, status, message, id=name)
        for name, kwargs, status, message in BAD_REQUESTS
    ],
)
def test_bad_requests_are_refused_before_anything_is_queued_or_stored(
    client: TestClient,
    operator: dict[str, str],
    model_home: Path,
    request_kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    before = runs_of(model_home)
    headers = {**operator, **request_kwargs.pop("headers", {})}
    answer = client.post("/v1/pipelines/fraud/runs", headers=headers, **request_kwargs)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert runs_of(model_home) == before
    assert not (model_home / "uploads").exists()
    assert not (model_home / "runs").exists()


def test_a_table_over_the_body_limit_is_refused_with_413(
    small: TestClient, operator: dict[str, str], model_home: Path, table: bytes
) -> None:
    files = {"spec": ("pipeline.yaml", SPEC), "data": ("fraud.parquet", _parquet(table))}
    answer = small.post("/v1/pipelines/fraud/runs", files=files, headers=operator)
    assert answer.status_code == 413
    assert "exceeds the limit of 2000" in answer.json()["error"]
    assert len(runs_of(model_home)) == 1


def test_an_empty_body_needs_a_last_run_with_its_data(
    client: TestClient, operator: dict[str, str], model_home: Path
) -> None:
    answer = client.post("/v1/pipelines/never/runs", headers=operator)
    assert answer.status_code == 404
    assert "pipeline 'never' has never run here" in answer.json()["error"]

    gone = model_home / "gone.parquet"
    with Registry.open(Settings(home=model_home)) as registry:
        registry.runs.start("gone", "name: gone", {"data": {"path": str(gone)}})
    answer = client.post("/v1/pipelines/gone/runs", headers=operator)
    assert answer.status_code == 409
    assert f"{gone}, is gone; send the table" in answer.json()["error"]
    assert runs_of(model_home, "gone")[1:] == []


def test_starting_a_run_needs_the_operator_role(
    client: TestClient, keys: dict[str, str], model_home: Path
) -> None:
    assert client.post("/v1/pipelines/fraud/runs").status_code == 401
    viewer = {"X-API-Key": keys["viewer"]}
    answer = client.post("/v1/pipelines/fraud/runs", headers=viewer)
    assert answer.status_code == 403
    assert len(runs_of(model_home)) == 1


def test_reading_runs_needs_a_token_only_when_inference_is_protected(
    model_home: Path, keys: dict[str, str]
) -> None:
    (run_id,) = runs_of(model_home)
    settings = Settings(home=model_home, protect_inference=True)
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/v1/pipelines/runs/{run_id}").status_code == 401
        viewer = {"X-API-Key": keys["viewer"]}
        answer = client.get(f"/v1/pipelines/runs/{run_id}", headers=viewer)
        assert answer.status_code == 200
        assert answer.json()["version"]["ref"] == "fraud:1"
        # The viewer role is the inference role: it reads runs, it does not start them.
        assert client.post("/v1/pipelines/fraud/runs", headers=viewer).status_code == 403


def test_an_unknown_run_is_404(client: TestClient) -> None:
    answer = client.get("/v1/pipelines/runs/nope")
    assert answer.status_code == 404
    assert "no run with id 'nope'" in answer.json()["error"]
    assert client.get("/v1/pipelines/nothing/runs").json() == {"pipeline": "nothing", "runs": []}


def test_a_real_server_trains_in_a_child_and_serves_the_new_version(
    model_home: Path, operator: dict[str, str], table: bytes, tmp_path: Path
) -> None:
    """``shipyard serve`` as a process: the run's child trains, the run reaches succeeded
    with its version, which the same server then evaluates and serves."""
    with (
        ServerProcess(Settings(home=model_home), log=tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=TRAINING_S + 30) as http,
    ):
        files = {"spec": ("pipeline.yaml", SPEC), "data": ("fraud.csv", table)}
        answer = http.post("/v1/pipelines/fraud/runs", files=files, headers=operator)
        assert answer.status_code == 202, answer.text
        # The server answers predictions while the child trains.
        request = {
            "instances": [dict.fromkeys(["Time", *[f"V{i}" for i in range(1, 29)], "Amount"], 0.0)]
        }
        assert http.post("/v1/models/fraud:predict", json=request).status_code == 200
        run = follow(http, answer.headers["location"])
        assert run["status"] == "succeeded", run["error"]
        assert run["version"]["ref"] == "fraud:2"
        holdout = generate_fraud(2000, seed=9).to_csv(index=False).encode()
        evaluated = http.post("/v1/models/fraud:2:evaluate", files={"file": ("h.csv", holdout)})
        assert evaluated.status_code == 200, evaluated.text
        assert evaluated.json()["version"] == 2
        assert evaluated.json()["rows"] == 2000
        predicted = http.post("/v1/models/fraud:2:predict", json=request)
        assert predicted.json()["version"] == 2

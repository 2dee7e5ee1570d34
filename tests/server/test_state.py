"""What a server logs of the predictions it answers (one record a batch: ``hooks.answered``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from shipyard.data import generate_fraud
from shipyard.monitoring.log import ParquetLog, schema
from shipyard.server.app import create_app
from shipyard.settings import Settings

from .conftest import FEATURES

FRAME = generate_fraud(4, seed=5)[FEATURES]


def test_answered_rows_land_in_the_parquet_log(model_home: Path) -> None:
    settings = Settings(home=model_home, serve_models=["fraud"])
    with TestClient(create_app(settings)) as client:
        instances = FRAME.to_dict(orient="records")
        instances[0]["id"] = "mine"
        answer = client.post("/v1/models/fraud:predict", json={"instances": instances}).json()
        oip = {
            "id": "req",
            "inputs": [
                {"name": "input", "shape": [2, 30], "datatype": "FP32",
                 "data": FRAME.head(2).to_numpy().ravel().tolist()}
            ],
        }  # fmt: skip
        assert client.post("/v2/models/fraud/infer", json=oip).status_code == 200
        assert client.post("/invocations", json={"inputs": FRAME.to_numpy().tolist()}).is_success
    files = list((model_home / "predictions").rglob("part-*.parquet"))
    assert files
    assert all("model=fraud" in str(f) and "version=1" in str(f) for f in files)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.schema == schema(FEATURES)
    ids = table.column("id").to_pylist()
    assert ids[:4] == [p["id"] for p in answer["predictions"]]
    assert ids[0] == "mine"
    assert ids[4:6] == ["req:0", "req:1"]
    assert len(set(ids)) == 10
    assert set(table.column("source").to_pylist()) == {"http"}
    first = table.slice(0, 1).column("features").to_pylist()[0]
    np.testing.assert_allclose(list(first.values()), FRAME.iloc[0].to_numpy(), rtol=1e-6)
    assert table.column("score").to_pylist()[0] == answer["predictions"][0]["probability"]
    assert table.column("label").to_pylist()[0] == str(int(answer["predictions"][0]["label"]))
    assert min(table.column("latency_ms").to_pylist()) > 0
    assert sum(t.num_rows for t in ParquetLog(model_home / "predictions").scan("fraud").values())


def test_an_unavailable_log_keeps_the_server_answering_and_counts_drops(
    model_home: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    settings = Settings(
        home=model_home,
        serve_models=["fraud"],
        prediction_log_dir=blocked,
        prediction_log_flush_ms=10,
    )
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            response = client.post(
                "/v1/models/fraud:predict", json={"inputs": FRAME.to_numpy().tolist()}
            )
            assert response.status_code == 200
        recorder = client.app.state.shipyard.recorder  # type: ignore[attr-defined]
        recorder.close()  # writes (and drops) what is buffered
        assert recorder.dropped == 12
        metrics = client.get("/metrics").text
    assert 'shipyard_prediction_log_dropped_total{model="fraud"}' in metrics


def test_logging_off_logs_nothing(model_home: Path) -> None:
    settings = Settings(home=model_home, serve_models=["fraud"], prediction_log="off")
    with TestClient(create_app(settings)) as client:
        assert client.app.state.shipyard.recorder is None  # type: ignore[attr-defined]
        assert client.post("/invocations", json={"inputs": FRAME.to_numpy().tolist()}).is_success
    assert not (model_home / "predictions").exists()

"""MLflow scoring protocol: ``/invocations`` in its four JSON formats and CSV, plus probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from shipyard import __version__
from shipyard.data import generate_fraud
from shipyard.server.app import create_app
from shipyard.server.mlflow import plain_split
from shipyard.settings import Settings

from .conftest import FEATURES
from .test_oip import score_directly

FRAME = generate_fraud(6, seed=23)[FEATURES]
MATRIX = FRAME.to_numpy(np.float32)
SHUFFLED = list(reversed(FEATURES))  # named formats must not depend on column order


def payloads() -> dict[str, Any]:
    return {
        "dataframe_split": {
            "dataframe_split": {
                "columns": SHUFFLED,
                "data": FRAME[SHUFFLED].to_numpy().tolist(),
            }
        },
        "dataframe_records": {"dataframe_records": FRAME[SHUFFLED].to_dict(orient="records")},
        "instances_rows": {"instances": FRAME.to_numpy().tolist()},
        "instances_records": {"instances": FRAME.to_dict(orient="records")},
        "inputs_rows": {"inputs": FRAME.to_numpy().tolist()},
        "inputs_columns": {"inputs": {c: FRAME[c].tolist() for c in SHUFFLED}},
    }


@pytest.mark.parametrize("form", list(payloads()))
def test_json_formats_agree_with_the_registered_model(
    client: TestClient, model_home: Path, form: str
) -> None:
    response = client.post("/invocations", json=payloads()[form])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    direct = score_directly(model_home, MATRIX)
    assert len(predictions) == len(MATRIX)
    np.testing.assert_allclose(
        [p["probability"] for p in predictions], direct["probability"], rtol=1e-6
    )
    assert [p["label"] for p in predictions] == direct["label"].tolist()


def test_csv_with_a_header_row(client: TestClient, model_home: Path) -> None:
    body = FRAME[SHUFFLED].to_csv(index=False).encode()
    response = client.post(
        "/invocations", content=body, headers={"Content-Type": "text/csv; charset=utf-8"}
    )
    assert response.status_code == 200, response.text
    probability = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(probability, score_directly(model_home, MATRIX)["probability"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of dataframe_split, dataframe_records, instances, inputs"),
        ({"instances": [], "inputs": []}, "exactly one of"),
        ({"dataframe_split": [1]}, "dataframe_split must be"),
        ({"dataframe_split": {"columns": "V1", "data": []}}, "`columns` must be a list"),
        ({"dataframe_records": [{"V1": 1}]}, "missing feature(s) in row 0: Time"),
        ({"inputs": {c: [1, 2] if c != "V2" else [3] for c in FEATURES}}, "only numbers"),
        ({"instances": [["a"] * 30]}, "must hold only numbers"),
        ({"inputs": {c: [None if c == "V3" else 1.0] for c in FEATURES}}, "'V3' is missing"),
        ({"instances": {c: [None if c == "V3" else 1.0] for c in FEATURES}}, "'V3' is missing"),
        ({"dataframe_split": {"columns": FEATURES, "data": [[None] + [0] * 29]}}, "is missing"),
        # dataframe_split the typed pass takes, yet the features refuse
        ({"dataframe_split": {"columns": [*FEATURES, "Time"], "data": [[0] * 31]}}, "Time more"),
        ({"dataframe_split": {"columns": FEATURES, "data": [[0] * 29]}}, "rows of 30 values"),
        ({"dataframe_split": {"columns": ["x", *FEATURES], "data": [[0] * 31]}}, "unknown"),
        # and what it leaves to the general way
        ({"dataframe_split": {"columns": FEATURES, "data": [[1e39] + [0] * 29]}}, "float32"),
        ({"dataframe_split": {"columns": FEATURES, "data": [[0] * 30, [0]]}}, "equal length"),
        ({"dataframe_split": {"columns": FEATURES, "data": [["a"] * 30]}}, "only numbers"),
    ],
)
def test_bad_payloads_are_400(client: TestClient, body: Any, message: str) -> None:
    response = client.post("/invocations", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_csv_without_feature_header_is_400(client: TestClient) -> None:
    response = client.post(
        "/invocations", content=b"1,2,3\n4,5,6\n", headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 400
    assert "unknown feature(s)" in response.json()["error"]


def test_probes(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200
    version = client.get("/version")
    assert version.status_code == 200
    assert version.text == __version__


def test_ping_is_503_without_a_default_model_and_health_stays_200(model_home: Path) -> None:
    """MLflow's /ping means ready to score /invocations; /health means the process is up."""
    with TestClient(create_app(Settings(home=model_home))) as client:
        ping = client.get("/ping")
        assert ping.status_code == 503
        assert ping.json() == {
            "error": "no default model for /invocations; start the server with --models NAME"
        }
        assert client.get("/health").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post("/invocations", json={"inputs": [[0.0] * 30]}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["id", *FEATURES],
                             "data": [["a", *MATRIX[0].tolist()], ["b", *MATRIX[1].tolist()]]}},
        {"dataframe_records": [{"id": "a", **FRAME.iloc[0].to_dict()},
                               {"id": "b", **FRAME.iloc[1].to_dict()}]},
        {"inputs": {"id": ["a", "b"], **{c: FRAME[c].tolist()[:2] for c in FEATURES}}},
    ],
    ids=["dataframe_split", "dataframe_records", "inputs_columns"],
)  # fmt: skip
def test_an_id_column_names_the_predictions(
    client: TestClient, model_home: Path, body: dict[str, Any]
) -> None:
    response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ids"] == ["a", "b"]
    assert (answer["model"], answer["version"]) == ("fraud", 1)  # the version that answered
    direct = score_directly(model_home, MATRIX[:1])
    assert answer["predictions"][0]["probability"] == pytest.approx(float(direct["probability"][0]))


def test_rows_without_ids_get_new_ones_csv_with_ids_keeps_them(client: TestClient) -> None:
    response = client.post("/invocations", json={"inputs": MATRIX.tolist()})
    ids = response.json()["ids"]
    assert len(set(ids)) == len(MATRIX)
    frame = FRAME.head(2).assign(id=["r1", "r2"])
    response = client.post(
        "/invocations", content=frame.to_csv(index=False), headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["ids"] == ["r1", "r2"]
    numeric = FRAME.head(2).assign(id=["007", "12"])  # ids that look like numbers stay text
    response = client.post(
        "/invocations", content=numeric.to_csv(index=False), headers={"content-type": "text/csv"}
    )
    assert response.json()["ids"] == ["007", "12"]


def test_a_bad_id_is_400_naming_the_row(client: TestClient) -> None:
    records = [{"id": "a", **FRAME.iloc[0].to_dict()}, {"id": 5.5, **FRAME.iloc[1].to_dict()}]
    response = client.post("/invocations", json={"dataframe_records": records})
    assert response.status_code == 400
    assert "the id of row 1 must be a string, got float" in response.json()["error"]
    assert 'send ids as JSON strings, e.g. "7"' in response.json()["error"]


def test_pandas_split_json_with_integer_ids_is_taken_as_their_text(client: TestClient) -> None:
    """pandas ``to_json(orient="split")`` sends an integer id column as numbers."""
    frame = FRAME.head(2).assign(id=[7, 12])
    split = orjson.loads(frame.to_json(orient="split", index=False))
    assert split["data"][0][split["columns"].index("id")] == 7
    response = client.post("/invocations", json={"dataframe_split": split})
    assert response.status_code == 200, response.text
    assert response.json()["ids"] == ["7", "12"]
    records = orjson.loads(frame.to_json(orient="records"))
    response = client.post("/invocations", json={"dataframe_records": records})
    assert response.json()["ids"] == ["7", "12"]


def test_the_typed_pass_takes_plain_dataframe_split_only() -> None:
    rows = [[1, 2.5], [3, -4]]
    split = plain_split(orjson.dumps({"dataframe_split": {"columns": ["a", "b"], "data": rows}}))
    assert split is not None
    columns, matrix = split
    assert columns == ["a", "b"]
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, rows)
    for other in (
        {"dataframe_split": {"columns": ["id", "b"], "data": rows}},  # ids are not features
        {"dataframe_split": {"columns": ["a", "b"], "data": [[True, 1]]}},
        {"dataframe_split": {"columns": ["a", "b"], "data": rows, "index": [0, 1]}},
        {"dataframe_split": {"columns": ["a", "b"], "data": []}},
        {"dataframe_split": {"columns": ["é", "b"], "data": rows}},
        {"dataframe_records": [{"a": 1, "b": 2}]},
    ):
        assert plain_split(orjson.dumps(other)) is None, other

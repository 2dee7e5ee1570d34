"""The plain JSON route: ``POST /v1/models/{name}:predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from shipyard.data import generate_fraud

from .conftest import FEATURES
from .test_oip import score_directly

FRAME = generate_fraud(5, seed=29)[FEATURES]
MATRIX = FRAME.to_numpy(np.float32)


@pytest.mark.parametrize(
    "body",
    [
        {"instances": FRAME.to_dict(orient="records")},
        {"inputs": FRAME.to_numpy().tolist()},
    ],
    ids=["instances", "inputs"],
)
@pytest.mark.parametrize("name", ["fraud", "fraud:1", "fraud@production"])
def test_predictions_name_model_version_and_features(
    client: TestClient, model_home: Path, body: dict[str, object], name: str
) -> None:
    response = client.post(f"/v1/models/{name}:predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "fraud"
    assert answer["version"] == 1
    assert answer["feature_names"] == FEATURES
    direct = score_directly(model_home, MATRIX)
    predictions = answer["predictions"]
    np.testing.assert_allclose([p["probability"] for p in predictions], direct["probability"])
    assert [p["label"] for p in predictions] == direct["label"].tolist()


def test_one_row_without_the_outer_list(client: TestClient, model_home: Path) -> None:
    response = client.post("/v1/models/fraud:predict", json={"inputs": MATRIX[0].tolist()})
    assert response.status_code == 200, response.text
    probability = response.json()["predictions"][0]["probability"]
    assert probability == pytest.approx(
        float(score_directly(model_home, MATRIX[:1])["probability"][0])
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rows": []}, 'send {"instances"'),
        ([], 'send {"instances"'),
        ({"instances": []}, "non-empty list of {feature: value}"),
        ({"instances": [[1, 2]]}, "row 0 is not an object"),
        (
            {"instances": [{**FRAME.iloc[0].to_dict(), "V1": "x"}]},
            "feature 'V1' in row 0 must be a number",
        ),
        ({"inputs": [[1, 2, 3]]}, "expected shape [rows, 30]"),
    ],
)
def test_bad_bodies_are_400(client: TestClient, body: object, message: str) -> None:
    response = client.post("/v1/models/fraud:predict", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_instances_carry_their_ids_and_others_get_new_ones(client: TestClient) -> None:
    instances = FRAME.to_dict(orient="records")[:3]
    instances[0]["id"] = "tx-1"
    instances[2]["id"] = "tx-3"
    response = client.post("/v1/models/fraud:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    ids = [p["id"] for p in response.json()["predictions"]]
    assert ids[0] == "tx-1"
    assert ids[2] == "tx-3"
    assert len(ids[1]) == 36  # a UUIDv7


def test_matrix_rows_get_new_unique_ordered_ids(client: TestClient) -> None:
    ids = []
    for _ in range(2):
        response = client.post("/v1/models/fraud:predict", json={"inputs": MATRIX.tolist()})
        ids += [p["id"] for p in response.json()["predictions"]]
    assert len(set(ids)) == 10
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            3.0,
            'instances[1] must be a string, got float; send ids as JSON strings, e.g. "7"',
        ),
        (False, "the id of instances[1] must be a string, got bool"),
        ([3], "the id of instances[1] must be a string, got list"),
        ("", "the id of instances[1] must not be empty"),
        ("x" * 201, "the id of instances[1] is 201 characters long; at most 200"),
    ],
)
def test_bad_instance_ids_are_400_naming_the_row(
    client: TestClient, bad: object, message: str
) -> None:
    instances = FRAME.to_dict(orient="records")[:2]
    instances[1]["id"] = bad
    response = client.post("/v1/models/fraud:predict", json={"instances": instances})
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_integer_instance_ids_are_their_decimal_text(client: TestClient) -> None:
    instances = FRAME.to_dict(orient="records")[:2]
    instances[0]["id"], instances[1]["id"] = 7, "8"
    response = client.post("/v1/models/fraud:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["predictions"]] == ["7", "8"]

"""Open Inference Protocol (KServe V2) REST: by hand, and through ``tritonclient.http``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from shipyard.data import generate_fraud
from shipyard.inference import load_predictor
from shipyard.inference.predictor import Outputs
from shipyard.registry import Registry
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

from .conftest import FEATURES, LiveServer


def rows(n: int, seed: int = 11) -> npt.NDArray[np.float32]:
    """Feature rows of the fraud schema, in feature order."""
    matrix: npt.NDArray[np.float32] = generate_fraud(n, seed=seed)[FEATURES].to_numpy(np.float32)
    return matrix


def score_directly(home: Path, features: npt.NDArray[np.float32], ref: str = "fraud:1") -> Outputs:
    """The registered model's outputs, loaded without any server."""
    with Registry.open(Settings(home=home)) as registry:
        return load_predictor(registry.load_artifact(ref)).predict(features)


def infer_body(features: npt.NDArray[np.float32]) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(features.shape),
                "datatype": "FP32",
                "data": features.ravel().tolist(),
            }
        ]
    }


# -- by hand, in-process ----------------------------------------------------------------------


def test_health_and_server_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "shipyard"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("path", ["/v2/models/fraud", "/v2/models/fraud/versions/1"])
def test_model_metadata_names_inputs_outputs_and_features(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    meta = response.json()
    assert meta["name"] == "fraud"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert [o["name"] for o in meta["outputs"]] == ["probability", "label", "id"]
    assert meta["parameters"]["features"] == FEATURES
    assert "production" in meta["parameters"]["aliases"]


@pytest.mark.parametrize("path", ["/v2/models/fraud/ready", "/v2/models/fraud/versions/1/ready"])
def test_model_ready(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"name": "fraud", "ready": True}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/nope", 404, "no model named 'nope'"),
        ("/v2/models/nope/ready", 404, "no model named 'nope'"),
        ("/v2/models/fraud/versions/9", 404, "has no version 9"),
        ("/v2/models/fraud/versions/9/ready", 404, "has no version 9"),
        ("/v2/models/fraud/versions/one", 400, "version must be a number, got 'one'"),
        ("/v2/models/fraud/versions/0/ready", 400, "versions run from 1"),
        ("/v2/models/fraud/versions/99999999999999999999", 400, "out of range"),
        ("/v2/models/fr%20aud/ready", 400, "is not a model reference"),
    ],
)
def test_metadata_and_readiness_errors(
    client: TestClient, path: str, status: int, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/fraud/infer",
        "/v2/models/fraud/versions/1/infer",
        "/v2/models/fraud:1/infer",
        "/v2/models/fraud@production/infer",
    ],
)
def test_json_infer_agrees_with_the_registered_model(
    client: TestClient, model_home: Path, path: str
) -> None:
    features = rows(5)
    response = client.post(path, json={"id": "req-1", **infer_body(features)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_version"] == "1"
    assert answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    direct = score_directly(model_home, features)
    assert outputs["probability"]["shape"] == [5]
    np.testing.assert_allclose(outputs["probability"]["data"], direct["probability"], rtol=1e-6)
    assert outputs["label"]["data"] == direct["label"].tolist()


def test_one_input_per_feature_is_accepted(client: TestClient, model_home: Path) -> None:
    features = rows(3)
    inputs = [
        {"name": name, "shape": [3], "datatype": "FP64", "data": features[:, i].tolist()}
        for i, name in enumerate(FEATURES)
    ]
    response = client.post("/v2/models/fraud/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    probability = response.json()["outputs"][0]["data"]
    np.testing.assert_allclose(probability, score_directly(model_home, features)["probability"])


def test_binary_infer_by_hand(client: TestClient, model_home: Path) -> None:
    features = rows(4)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [4, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": features.nbytes},
                }
            ],
            "outputs": [{"name": "probability", "parameters": {"binary_data": True}}],
        }
    )
    response = client.post(
        "/v2/models/fraud/infer",
        content=header + features.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    meta = orjson.loads(response.content[:length])
    assert meta["outputs"] == [
        {
            "name": "probability",
            "datatype": "FP32",
            "shape": [4],
            "parameters": {"binary_data_size": 16},
        }
    ]
    probability = np.frombuffer(response.content[length:], dtype=np.float32)
    np.testing.assert_allclose(probability, score_directly(model_home, features)["probability"])


# -- through tritonclient, against a real server -----------------------------------------------


@pytest.fixture(scope="module")
def live_server(
    trained_model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One real ``shipyard serve`` for the module (the conftest's is one per test): these
    tests only read and predict, so they need no fresh server."""
    home = tmp_path_factory.mktemp("oip") / "home"
    shutil.copytree(trained_model_home, home)
    with ServerProcess(Settings(home=home), log=home.parent / "server.log") as server:
        yield LiveServer(server.url, f"127.0.0.1:{server.port}", home, server.process)


def test_tritonclient_health_and_metadata(live_server: LiveServer) -> None:
    client = triton.InferenceServerClient(live_server.host_port)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("fraud")
        assert client.is_model_ready("fraud", model_version="1")
        assert not client.is_model_ready("nope")
        assert client.get_server_metadata()["name"] == "shipyard"
        meta = client.get_model_metadata("fraud", model_version="1")
        assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 30]}
        assert meta["versions"] == ["1"]
    finally:
        client.close()


def test_tritonclient_infer_binary_and_json(live_server: LiveServer) -> None:
    features = rows(8, seed=17)
    direct = score_directly(live_server.home, features)
    client = triton.InferenceServerClient(live_server.host_port)
    try:
        for binary_in in (True, False):
            tensor = triton.InferInput("input", list(features.shape), "FP32")
            tensor.set_data_from_numpy(features, binary_data=binary_in)
            # No outputs named: tritonclient asks for every output in binary.
            result = client.infer("fraud", [tensor], model_version="1", request_id="abc")
            np.testing.assert_allclose(result.as_numpy("probability"), direct["probability"])
            np.testing.assert_array_equal(result.as_numpy("label"), direct["label"])
            assert result.get_response()["model_version"] == "1"
            assert result.get_response()["id"] == "abc"
            ids = [i.decode() for i in result.as_numpy("id").tolist()]
            assert ids == [f"abc:{row}" for row in range(8)]
            # Outputs named one by one: one in JSON, one in binary.
            requested = [
                triton.InferRequestedOutput("probability", binary_data=not binary_in),
                triton.InferRequestedOutput("label", binary_data=binary_in),
            ]
            result = client.infer("fraud", [tensor], outputs=requested)
            np.testing.assert_allclose(result.as_numpy("probability"), direct["probability"])
            np.testing.assert_array_equal(result.as_numpy("label"), direct["label"])
    finally:
        client.close()


def test_tritonclient_errors_carry_our_message(live_server: LiveServer) -> None:
    client = triton.InferenceServerClient(live_server.host_port)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("nope")
        assert caught.value.status() == "404"
        assert "no model named 'nope'" in caught.value.message()

        narrow = triton.InferInput("input", [1, 29], "FP32")
        narrow.set_data_from_numpy(np.zeros((1, 29), np.float32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("fraud", [narrow])
        assert caught.value.status() == "400"
        assert "expected shape [rows, 30]" in caught.value.message()

        good = triton.InferInput("input", [1, 30], "FP32")
        good.set_data_from_numpy(rows(1))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("fraud", [good], model_version="7")
        assert caught.value.status() == "404"
        assert "has no version 7" in caught.value.message()

        # the server is unharmed
        assert client.infer("fraud", [good]).as_numpy("label").shape == (1,)
    finally:
        client.close()


def infer_ids(client: TestClient, body: dict[str, object]) -> list[str]:
    response = client.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 200, response.text
    (tensor,) = [o for o in response.json()["outputs"] if o["name"] == "id"]
    assert tensor["datatype"] == "BYTES"
    assert tensor["shape"] == [len(tensor["data"])]
    ids: list[str] = tensor["data"]
    return ids


def test_row_ids_come_from_the_request_id(client: TestClient) -> None:
    assert infer_ids(client, {**infer_body(rows(3)), "id": "req-7"}) == [
        "req-7:0",
        "req-7:1",
        "req-7:2",
    ]
    assert infer_ids(client, {**infer_body(rows(1)), "id": "tx-42"}) == ["tx-42"]


def test_rows_without_a_request_id_get_new_ordered_ids(client: TestClient) -> None:
    first = infer_ids(client, infer_body(rows(4)))
    second = infer_ids(client, infer_body(rows(4)))
    assert len(set(first + second)) == 8
    assert first + second == sorted(first + second)  # UUIDv7: ordered by time
    assert all(len(i) == 36 for i in first)


def test_the_id_output_follows_the_outputs_filter(client: TestClient) -> None:
    body = {**infer_body(rows(2)), "id": "r", "outputs": [{"name": "label"}]}
    response = client.post("/v2/models/fraud/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]
    body["outputs"] = [{"name": "id", "parameters": {"binary_data": True}}]
    response = client.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:length])
    assert [o["name"] for o in header["outputs"]] == ["id"]
    assert response.content[length:] == b"\x03\x00\x00\x00r:0\x03\x00\x00\x00r:1"


@pytest.mark.parametrize(
    ("request_id", "message"),
    [
        (7.5, "the id of the request must be a string, got float; send ids as JSON strings"),
        (True, "the id of the request must be a string, got bool"),
        ("", "the id of the request must not be empty"),
        ("x" * 201, "at most 200"),
        ("x" * 199, "the id of row 1 (the request's id and row number) is 201 characters"),
    ],
)
def test_bad_request_ids_are_400(client: TestClient, request_id: object, message: str) -> None:
    body = {**infer_body(rows(2)), "id": request_id}
    response = client.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_an_integer_request_id_is_its_decimal_text(client: TestClient) -> None:
    assert infer_ids(client, {**infer_body(rows(2)), "id": 7}) == ["7:0", "7:1"]
    assert infer_ids(client, {**infer_body(rows(1)), "id": 42}) == ["42"]

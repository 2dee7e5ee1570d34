"""Bad input gets a clear 4xx and harms nobody: the next request, and requests sent at the
same time, still succeed; the worker never dies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from shipyard.data import generate_fraud
from shipyard.registry import Registry
from shipyard.server.app import create_app
from shipyard.settings import Settings

from .conftest import FEATURES, LiveServer

ROW = generate_fraud(1, seed=31)[FEATURES].iloc[0].to_dict()
VALUES = [float(ROW[name]) for name in FEATURES]


@dataclass(frozen=True)
class Bad:
    """One bad request (httpx keyword arguments) and the answer it must get."""

    id: str
    path: str
    status: int
    message: str
    request: dict[str, Any] = field(default_factory=dict)


def tensor(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": VALUES}
    return {"inputs": [{**base, **changes}]}


def binary(size: int, blob: bytes, *, header_length: str | None = None) -> dict[str, Any]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    length = header_length if header_length is not None else str(len(header))
    return {
        "content": header + blob,
        "headers": {
            "Inference-Header-Content-Length": length,
            "Content-Type": "application/octet-stream",
        },
    }


def raw(content: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": content, "headers": {"Content-Type": content_type}}


ROW_BYTES = np.asarray(VALUES, np.float32).tobytes()
NAN_ROW = np.asarray([np.nan, *VALUES[1:]], np.float32).tobytes()
INFER = "/v2/models/fraud/infer"
PREDICT = "/v1/models/fraud:predict"
INVOCATIONS = "/invocations"
PROMOTE_HINT = "promote one with `shipyard models promote"

BAD = [
    # Open Inference Protocol
    Bad(
        "oip-wrong-shape",
        INFER,
        400,
        "expected shape [rows, 30]",
        {"json": tensor(shape=[1, 29], data=VALUES[:29])},
    ),
    Bad(
        "oip-shape-data-mismatch",
        INFER,
        400,
        "needs 30 values, `data` has 29",
        {"json": tensor(data=VALUES[:29])},
    ),
    Bad("oip-strings", INFER, 400, "must hold only numbers", {"json": tensor(data=["a"] * 30)}),
    Bad(
        "oip-unsupported-datatype",
        INFER,
        400,
        "datatype 'STRING' is not supported",
        {"json": tensor(datatype="STRING")},
    ),
    Bad(
        "oip-bytes-for-a-table-model",
        INFER,
        422,
        "fraud is not an image model, so it takes no BYTES input",
        {"json": tensor(datatype="BYTES", shape=[1], data=["aW1hZ2U="])},
    ),
    Bad(
        "oip-missing-input-name",
        INFER,
        400,
        "inputs[0] needs a `name`",
        {"json": tensor(name=None)},
    ),
    Bad(
        "oip-unknown-input-name",
        INFER,
        400,
        "expected input 'input' of shape [rows, 30]",
        {"json": tensor(name="features")},
    ),
    Bad(
        "oip-null",
        INFER,
        400,
        "feature 'V1' is missing (NaN or null) in row 0",
        {"json": tensor(data=[VALUES[0], None, *VALUES[2:]])},
    ),
    Bad(
        "oip-nan-binary",
        INFER,
        400,
        "feature 'Time' is missing (NaN or null)",
        binary(120, NAN_ROW),
    ),
    Bad(
        "oip-beyond-float32",
        INFER,
        400,
        "beyond the float32 range",
        {"json": tensor(data=[1e300] * 30)},
    ),
    Bad("oip-malformed-json", INFER, 400, "malformed JSON", raw(b'{"inputs": [')),
    Bad(
        "oip-content-type",
        INFER,
        415,
        "content type 'text/plain' is not accepted",
        raw(b"{}", "text/plain"),
    ),
    Bad(
        "oip-header-longer-than-body",
        INFER,
        400,
        "Inference-Header-Content-Length is 100000",
        binary(120, ROW_BYTES, header_length="100000"),
    ),
    Bad(
        "oip-size-vs-shape",
        INFER,
        400,
        "binary_data_size 116 does not match shape [1, 30]",
        binary(116, ROW_BYTES[:116]),
    ),
    Bad(
        "oip-size-past-end",
        INFER,
        400,
        "runs past the end of the body",
        binary(120, ROW_BYTES[:100]),
    ),
    Bad(
        "oip-leftover-bytes",
        INFER,
        400,
        "add up to 120 bytes but 124 follow",
        binary(120, ROW_BYTES + b"junk"),
    ),
    Bad(
        "oip-header-not-a-number",
        INFER,
        400,
        "must be a whole number, got 'abc'",
        binary(120, ROW_BYTES, header_length="abc"),
    ),
    Bad(
        "oip-unknown-model",
        "/v2/models/nope/infer",
        404,
        "no model named 'nope'",
        {"json": tensor()},
    ),
    Bad(
        "oip-unknown-version",
        "/v2/models/fraud/versions/9/infer",
        404,
        "model 'fraud' has no version 9",
        {"json": tensor()},
    ),
    Bad(
        "oip-version-not-a-number",
        "/v2/models/fraud/versions/latest/infer",
        400,
        "version must be a number, got 'latest'",
        {"json": tensor()},
    ),
    Bad(
        "oip-version-too-big",
        "/v2/models/fraud/versions/99999999999999999999/infer",
        400,
        "out of range",
        {"json": tensor()},
    ),
    # MLflow scoring
    Bad(
        "mlflow-unknown-feature",
        INVOCATIONS,
        400,
        "unknown feature(s) in row 0: Colour",
        {"json": {"dataframe_records": [{**ROW, "Colour": 1}]}},
    ),
    Bad(
        "mlflow-missing-feature",
        INVOCATIONS,
        400,
        "missing feature(s): Amount",
        {"json": {"dataframe_split": {"columns": FEATURES[:-1], "data": [VALUES[:-1]]}}},
    ),
    Bad(
        "mlflow-null",
        INVOCATIONS,
        400,
        "feature 'Amount' is missing (NaN or null) in row 0",
        {"json": {"instances": [[*VALUES[:-1], None]]}},
    ),
    Bad(
        "mlflow-strings",
        INVOCATIONS,
        400,
        "must hold only numbers",
        {"json": {"inputs": [["x"] * 30]}},
    ),
    Bad(
        "mlflow-wrong-shape",
        INVOCATIONS,
        400,
        "expected shape [rows, 30]",
        {"json": {"instances": [VALUES[:3]]}},
    ),
    Bad("mlflow-malformed-json", INVOCATIONS, 400, "malformed JSON", raw(b"{,}")),
    Bad(
        "mlflow-content-type",
        INVOCATIONS,
        415,
        "send application/json or text/csv",
        raw(b"<xml/>", "application/xml"),
    ),
    Bad(
        "mlflow-csv-text",
        INVOCATIONS,
        400,
        "must hold only numbers",
        raw((",".join(FEATURES) + "\n" + ",".join(["x"] * 30) + "\n").encode(), "text/csv"),
    ),
    # Plain JSON
    Bad(
        "predict-unknown-feature",
        PREDICT,
        400,
        "unknown feature(s) in row 0: Colour",
        {"json": {"instances": [{**ROW, "Colour": 1}]}},
    ),
    Bad(
        "predict-missing-feature",
        PREDICT,
        400,
        "missing feature(s) in row 0: V7",
        {"json": {"instances": [{k: v for k, v in ROW.items() if k != "V7"}]}},
    ),
    Bad(
        "predict-null",
        PREDICT,
        400,
        "feature 'V3' is missing (NaN or null) in row 0",
        {"json": {"instances": [{**ROW, "V3": None}]}},
    ),
    Bad(
        "predict-string-value",
        PREDICT,
        400,
        "feature 'V3' in row 0 must be a number, got 'high'",
        {"json": {"instances": [{**ROW, "V3": "high"}]}},
    ),
    Bad(
        "predict-ragged-rows",
        PREDICT,
        400,
        "in rows of equal length",
        {"json": {"inputs": [VALUES, VALUES[:10]]}},
    ),
    Bad("predict-malformed-json", PREDICT, 400, "malformed JSON", raw(b"instances=1")),
    Bad(
        "predict-content-type",
        PREDICT,
        415,
        "content type '(none)' is not accepted",
        {"content": b"{}"},
    ),
    Bad(
        "predict-unknown-model",
        "/v1/models/nope:predict",
        404,
        "no model named 'nope'",
        {"json": {"inputs": [VALUES]}},
    ),
    Bad(
        "predict-unknown-version",
        "/v1/models/fraud:9:predict",
        404,
        "model 'fraud' has no version 9",
        {"json": {"inputs": [VALUES]}},
    ),
    Bad(
        "predict-bad-name",
        "/v1/models/fr$aud:predict",
        400,
        "'fr$aud' is not a model reference",
        {"json": {"inputs": [VALUES]}},
    ),
]

GOOD: list[tuple[str, dict[str, Any]]] = [
    (INFER, {"json": tensor()}),
    (INFER, binary(120, ROW_BYTES)),
    (INVOCATIONS, {"json": {"dataframe_records": [ROW]}}),
    (PREDICT, {"json": {"instances": [ROW]}}),
]


class Answer(Protocol):
    """A response of httpx or of the TestClient (which is built on httpx2)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def check_bad(response: Answer, bad: Bad) -> None:
    assert response.status_code == bad.status, f"{bad.id}: {response.text}"
    error = response.json()["error"]
    assert bad.message in error, f"{bad.id}: {error}"


def check_good(response: Answer) -> None:
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_input_is_a_clear_4xx_and_the_next_request_succeeds(
    client: TestClient, bad: Bad
) -> None:
    check_bad(client.post(bad.path, **bad.request), bad)
    for path, good in GOOD:
        check_good(client.post(path, **good))


# -- body size --------------------------------------------------------------------------------


@pytest.fixture
def small_body_client(server_settings: Settings) -> Iterator[TestClient]:
    """A server that refuses bodies over 4 KiB (one fraud row in JSON is about 700 bytes)."""
    settings = server_settings.model_copy(update={"max_body_bytes": 4096})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", [INFER, INVOCATIONS, PREDICT])
def test_oversized_body_is_413(small_body_client: TestClient, path: str) -> None:
    big = {"inputs": [VALUES] * 200}
    response = small_body_client.post(path, json=big)
    assert response.status_code == 413
    assert "exceeds the limit of 4096" in response.json()["error"]
    for good_path, good in GOOD:
        check_good(small_body_client.post(good_path, **good))


def test_oversized_chunked_body_without_content_length_is_413(
    small_body_client: TestClient,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(100):
            yield orjson.dumps(VALUES) + b","
        yield b"[]]}"

    response = small_body_client.post(
        PREDICT, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "exceeds the limit of 4096" in response.json()["error"]
    check_good(small_body_client.post(PREDICT, json={"instances": [ROW]}))


# -- no production alias ----------------------------------------------------------------------


def register_unpromoted(home: Path) -> None:
    """Register fraud's artifact again as ``shadow``:1, with no alias at all."""
    with Registry.open(Settings(home=home)) as registry:
        artifact = registry.load_artifact("fraud:1")
        manifest = artifact.manifest
        info = registry.register_version(
            "shadow",
            files=artifact.files,
            format=manifest.format,
            input_schema=manifest.input_schema,
            output_schema=manifest.output_schema,
            metrics={},
        )
    assert info.aliases == []


@pytest.mark.parametrize(
    ("path", "request_kwargs"),
    [
        ("/v2/models/shadow/infer", {"json": tensor()}),
        ("/v2/models/shadow", {}),
        ("/v1/models/shadow:predict", {"json": {"instances": [ROW]}}),
    ],
)
def test_model_without_production_alias_says_how_to_promote(
    client: TestClient, model_home: Path, path: str, request_kwargs: dict[str, Any]
) -> None:
    register_unpromoted(model_home)
    method = "POST" if request_kwargs else "GET"
    response = client.request(method, path, **request_kwargs)
    assert response.status_code == 404
    error = response.json()["error"]
    assert "no version of 'shadow' has alias 'production'" in error
    assert "`shipyard models promote shadow:N --alias production`" in error
    # the version itself serves, and so does everything else
    check_good(client.post("/v2/models/shadow/versions/1/infer", json=tensor()))
    for good_path, good in GOOD:
        check_good(client.post(good_path, **good))


# -- against a real server: a barrage, good requests in the middle of it ----------------------


def test_bad_input_barrage_with_concurrent_good_requests(live_server: LiveServer) -> None:
    errors: list[str] = []
    lock = threading.Lock()

    def send_bad(bad: Bad) -> None:
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            response = http.post(bad.path, **bad.request)
        try:
            check_bad(response, bad)
        except AssertionError as error:
            with lock:
                errors.append(str(error))

    def send_good(index: int) -> None:
        path, good = GOOD[index % len(GOOD)]
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            response = http.post(path, **good)
        if response.status_code != 200:
            with lock:
                errors.append(f"good {path}: {response.status_code} {response.text}")

    def send_chunked_oversize() -> None:
        def chunks() -> Iterator[bytes]:
            for _ in range(17 * 1024):  # 17 MiB, over the default 16 MiB limit
                yield b" " * 1024

        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            response = http.post(
                INFER, content=chunks(), headers={"Content-Type": "application/json"}
            )
        if response.status_code != 413:
            with lock:
                errors.append(f"chunked oversize: {response.status_code} {response.text}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(send_chunked_oversize)]
        for round_ in range(2):
            for i, bad in enumerate(BAD):
                futures.append(pool.submit(send_bad, bad))
                futures.append(pool.submit(send_good, round_ * len(BAD) + i))
        for future in futures:
            future.result()

    assert errors == []
    assert live_server.process.poll() is None, "the server process died"
    assert httpx.get(f"{live_server.url}/v2/health/ready").status_code == 200
    check_good(httpx.post(f"{live_server.url}{PREDICT}", json={"instances": [ROW]}))

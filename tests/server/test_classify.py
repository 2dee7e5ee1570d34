"""``POST /v1/models/{name}:classify`` and OIP ``BYTES`` inputs with a real digits model,
images fetched by URL from a real HTTP server on 127.0.0.1, and every bad image refused with
its own status."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from digits import digit, huge_png, jpeg, png, register_digits
from image_host import ImageHost, image_host
from shipyard.inference import ExportedModel
from shipyard.registry import Registry
from shipyard.server.app import create_app
from shipyard.settings import Settings

LABEL, IMAGE = digit(-1)
PNG = png(IMAGE)


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    with image_host({"digit.png": PNG, "big-digit.png": png(IMAGE, 40)}) as h:
        yield h


@pytest.fixture
def image_home(home: Path, exported_models: list[ExportedModel]) -> Path:
    """A home with digits:1 (an image model) and table:1 (four features) in production."""
    with Registry.open(Settings(home=home)) as registry:
        register_digits(registry)
        model = exported_models[0]
        registry.register_version(
            "table",
            files=model.files,
            format=model.format,
            input_schema=model.input_schema,
            output_schema=model.output_schema,
            metrics={},
        )
        registry.promote("table:1", "production")
    return home


def image_settings(home: Path, **options: object) -> Settings:
    return Settings(
        home=home,
        serve_models=["digits"],
        image_url_hosts=["127.0.0.1"],
        image_url_timeout_seconds=1.0,
        image_url_max_bytes=200_000,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(image_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(image_settings(image_home))) as test_client:
        yield test_client


def classify(
    client: TestClient, path: str = "/v1/models/digits:classify", **kwargs: object
) -> httpx.Response:
    return client.post(path, **kwargs)  # type: ignore[arg-type]


def raw(client: TestClient, path: str, body: bytes = PNG, kind: str = "png") -> httpx.Response:
    """The image as the request body, typed ``image/{kind}``."""
    return client.post(path, content=body, headers={"content-type": f"image/{kind}"})


def binary_bytes(blob: bytes) -> tuple[bytes, dict[str, str]]:
    """An OIP binary-extension body of one BYTES input holding ``blob``, and its headers."""
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES"}
    parameters = {"binary_data_size": len(blob)}
    header = orjson.dumps({"inputs": [tensor | {"parameters": parameters}]})
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + blob, headers


def test_an_uploaded_png_gets_its_label_and_top_five(client: TestClient) -> None:
    response = classify(client, files={"file": ("digit.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model"], answer["version"], answer["label"]) == ("digits", 1, LABEL)
    top = answer["top_k"]
    assert len(top) == 5
    assert top[0]["label"] == LABEL
    probabilities = [c["probability"] for c in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0.5 < probabilities[0] <= 1.0
    assert answer["id"]


def test_a_raw_png_or_jpeg_body_and_top_k(client: TestClient) -> None:
    three = raw(client, "/v1/models/digits:classify?top_k=3")
    assert three.status_code == 200, three.text
    assert (three.json()["label"], len(three.json()["top_k"])) == (LABEL, 3)
    big_jpeg = jpeg(IMAGE.resize((64, 64)))
    bounded = raw(client, "/v1/models/digits@production:classify?top_k=50", big_jpeg, "jpeg")
    assert bounded.status_code == 200, bounded.text
    assert len(bounded.json()["top_k"]) == 10  # the model has ten classes
    assert raw(client, "/v1/models/digits:1:classify").json()["version"] == 1


@pytest.mark.parametrize("top_k", ["0", "-1", "two", "100000"])
def test_a_bad_top_k_is_refused(client: TestClient, top_k: str) -> None:
    response = raw(client, f"/v1/models/digits:classify?top_k={top_k}")
    assert response.status_code == 400
    assert "top_k must be a whole number from 1" in response.json()["error"]


def test_a_url_on_the_allow_list_and_a_base64_image(client: TestClient, host: ImageHost) -> None:
    by_url = classify(client, json={"url": f"{host.url}/big-digit.png", "id": "req-1"})
    assert by_url.status_code == 200, by_url.text
    assert (by_url.json()["label"], by_url.json()["id"]) == (LABEL, "req-1")
    inline = classify(client, json={"image_base64": base64.b64encode(PNG).decode()})
    assert (inline.status_code, inline.json()["label"]) == (200, LABEL)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"hello, not an image", 415, "not a PNG or JPEG image"),
        (PNG[: len(PNG) // 2], 400, "truncated or corrupt"),
        (b"", 400, "the image is empty"),
    ],
    ids=["not-an-image", "truncated-png", "empty"],
)
def test_bad_image_bytes(client: TestClient, body: bytes, status: int, message: str) -> None:
    response = classify(client, content=body, headers={"content-type": "image/png"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_50_megapixel_png_is_refused_with_413_before_decoding(client: TestClient) -> None:
    response = classify(client, files={"file": ("huge.png", huge_png(), "image/png")})
    assert response.status_code == 413, response.text
    assert "8000×6250 = 50,000,000 pixels" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/redirect?to=http://localhost:9/digit.png", 403, "not fetched from localhost:9"),
        ("/hang", 504, "within 1 s"),
        ("/big", 413, "over 200,000 bytes"),
        ("/status/500", 502, "answered 500"),
    ],
    ids=["redirect-off-the-list", "slow", "too-large", "error-status"],
)
def test_urls_that_give_no_image(
    client: TestClient, host: ImageHost, path: str, status: int, message: str
) -> None:
    response = classify(client, json={"url": f"{host.url}{path}"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_url_off_the_allow_list_says_how_to_allow_it(image_home: Path, host: ImageHost) -> None:
    settings = Settings(home=image_home, serve_models=["digits"])  # no host allowed
    with TestClient(create_app(settings)) as client:
        response = classify(client, json={"url": f"{host.url}/digit.png"})
    assert response.status_code == 403
    assert "SHIPYARD_IMAGE_URL_HOSTS" in response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
        ({"files": {"image": ("d.png", PNG, "image/png")}}, 400, "fields sent: 'image'"),
        ({"data": {"file": "text"}, "files": {"x": ("x.png", PNG)}}, 400, "is text, not a file"),
        ({"json": {"url": 3}}, 400, "`url` must be a string"),
        ({"json": {"nothing": 1}}, 400, 'send {"url"'),
        ({"json": {"image_base64": "@@@"}}, 400, "not base64"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "malformed"),
    ],
    ids=[
        "text-body",
        "wrong-field",
        "text-field",
        "url-number",
        "no-image",
        "bad-base64",
        "bad-json",
    ],
)
def test_requests_without_an_image(
    client: TestClient, kwargs: dict[str, object], status: int, message: str
) -> None:
    response = classify(client, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_table_model_is_not_an_image_model(client: TestClient) -> None:
    response = raw(client, "/v1/models/table:classify")
    assert response.status_code == 422
    assert "table is not an image model" in response.json()["error"]


def test_classify_needs_a_token_when_inference_is_protected(image_home: Path) -> None:
    with TestClient(create_app(image_settings(image_home, protect_inference=True))) as client:
        response = raw(client, "/v1/models/digits:classify")
    assert response.status_code == 401


def test_concurrent_images_are_batched(image_home: Path) -> None:
    """Forty requests at once reach the model in fewer calls than requests."""
    app = create_app(image_settings(image_home, max_batch_delay_ms=20.0))

    def calls() -> float:
        value = REGISTRY.get_sample_value(
            "shipyard_batch_size_rows_count", {"model": "digits", "version": "1"}
        )
        return value or 0.0

    async def burst() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                headers = {"content-type": "image/png"}
                path = "/v1/models/digits:classify"
                requests = [client.post(path, content=PNG, headers=headers) for _ in range(40)]
                return await asyncio.gather(*requests)

    before = calls()
    responses = asyncio.run(asyncio.wait_for(burst(), 60))
    assert [r.status_code for r in responses] == [200] * 40
    assert {r.json()["label"] for r in responses} == {LABEL}
    assert calls() - before < 40


# -- Open Inference Protocol ------------------------------------------------------------------


def test_oip_bytes_json_base64_images(client: TestClient) -> None:
    encoded = base64.b64encode(PNG).decode()
    body = {"id": "r", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                   "data": [encoded, encoded]}]}  # fmt: skip
    response = client.post("/v2/models/digits/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["data"] == [LABEL, LABEL]
    assert outputs["probabilities"]["shape"] == [2, 10]
    assert outputs["id"]["data"] == ["r:0", "r:1"]


def test_oip_bytes_binary_tensor_extension(client: TestClient) -> None:
    body, headers = binary_bytes(struct.pack("<I", len(PNG)) + PNG)
    response = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["data"] == [LABEL]


@pytest.mark.parametrize(
    ("model", "tensor", "status", "message"),
    [
        ("table", {"data": ["eA=="]}, 422, "table is not an image model"),
        ("digits", {"data": ["@@@"]}, 400, "image 0 (BYTES"),
        ("digits", {"data": [base64.b64encode(b"text").decode()]}, 415, "image 0: the 4 bytes"),
        ("digits", {"data": [1]}, 400, "BYTES `data` must be a list of strings"),
        ("digits", {"data": ["a", "b"]}, 400, "needs 1 elements, 2 were sent"),
    ],
    ids=["table-model", "bad-base64", "not-an-image", "numbers", "wrong-count"],
)
def test_oip_bad_bytes_inputs(
    client: TestClient, model: str, tensor: dict[str, object], status: int, message: str
) -> None:
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", **tensor}]}
    response = client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_oip_binary_bytes_with_a_bad_length_prefix(client: TestClient) -> None:
    body, headers = binary_bytes(struct.pack("<I", 1000) + PNG[:10])
    response = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert response.status_code == 400
    assert "element 0 says 1000 bytes" in response.json()["error"]


def test_oip_metadata_of_an_image_model_names_its_bytes_input(client: TestClient) -> None:
    inputs = client.get("/v2/models/digits").json()["inputs"]
    assert inputs[1]["datatype"] == "BYTES"
    assert inputs[1]["parameters"]["image"]["width"] == 8
    assert len(client.get("/v2/models/table").json()["inputs"]) == 1


def test_oip_tables_still_answer_as_before(client: TestClient) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                        "data": [0.1, 0.2, 0.3, 0.4]}]}  # fmt: skip
    response = client.post("/v2/models/table/infer", json=body)
    assert response.status_code == 200, response.text
    unknown = {"inputs": [{"name": "x", "shape": [1], "datatype": "STRING", "data": ["a"]}]}
    refused = client.post("/v2/models/table/infer", json=unknown)
    assert refused.status_code == 400
    assert "or BYTES (images)" in refused.json()["error"]

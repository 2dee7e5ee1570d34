"""Images to classify: fetching by URL from a real HTTP server on 127.0.0.1 within the
allow-list and bounds, base64 images, and ranking a classifier's classes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest

from digits import digit, png
from image_host import ImageHost, image_host
from shipyard.errors import (
    FetchError,
    FetchTimeoutError,
    InvalidInputError,
    PayloadTooLargeError,
    PermissionDeniedError,
    SchemaError,
    UnsupportedMediaTypeError,
)
from shipyard.inference.images import ImageFetcher, base64_image, ranked_classes
from shipyard.inference.inputs import FeatureLayout
from shipyard.settings import Settings

T = TypeVar("T")
PNG = png(digit()[1])


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    with image_host({"digit.png": PNG, "page.png": b"<html>a page, not an image</html>"}) as h:
        yield h


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 30)

    return asyncio.run(bounded())


def fetch(fetcher: ImageFetcher, url: str) -> bytes:
    async def go() -> bytes:
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.close()

    return run(go())


def test_an_allowed_host_gives_the_image_bytes(host: ImageHost) -> None:
    fetcher = ImageFetcher(hosts=["127.0.0.1"])
    assert fetch(fetcher, f"{host.url}/digit.png") == PNG


def test_settings_describe_the_fetcher() -> None:
    settings = Settings(
        image_url_hosts=["a.example"], image_url_max_bytes=5, image_url_timeout_seconds=2
    )
    fetcher = ImageFetcher.from_settings(settings)
    assert (list(fetcher.hosts), fetcher.max_bytes, fetcher.timeout_s) == (["a.example"], 5, 2)
    assert ImageFetcher.from_settings(Settings()).hosts == []  # nothing allowed by default


def test_hosts_match_by_name_or_name_and_port() -> None:
    fetcher = ImageFetcher(hosts=["Images.Example.com", "127.0.0.1:8080", "[::1]:9000"])
    assert fetcher.allows("images.example.com", 443)
    assert fetcher.allows("127.0.0.1", 8080)
    assert not fetcher.allows("127.0.0.1", 8081)
    assert fetcher.allows("::1", 9000)
    assert not fetcher.allows("evil.example.com", 443)
    assert not fetcher.allows("images.example.com.evil.com", 443)


def test_no_host_is_allowed_by_default_and_the_refusal_says_how_to_allow_one(
    host: ImageHost,
) -> None:
    before = len(host.requests)
    with pytest.raises(PermissionDeniedError, match="SHIPYARD_IMAGE_URL_HOSTS") as refused:
        fetch(ImageFetcher(), f"{host.url}/digit.png")
    assert refused.value.status_code == 403
    assert '["127.0.0.1"]' in str(refused.value)
    assert host.requests[before:] == []  # refused before connecting


def test_a_host_off_the_list_is_refused(host: ImageHost) -> None:
    with pytest.raises(PermissionDeniedError, match="add it to SHIPYARD_IMAGE_URL_HOSTS"):
        fetch(ImageFetcher(hosts=["images.example.com"]), f"{host.url}/digit.png")


def test_a_redirect_within_the_list_is_followed(host: ImageHost) -> None:
    fetcher = ImageFetcher(hosts=["127.0.0.1"])
    assert fetch(fetcher, f"{host.url}/redirect?to=/digit.png") == PNG


def test_a_redirect_off_the_list_is_refused_before_going_there(host: ImageHost) -> None:
    fetcher = ImageFetcher(hosts=[f"127.0.0.1:{host.port}"])
    elsewhere = "http://localhost:1/digit.png"
    with pytest.raises(PermissionDeniedError, match="not fetched from localhost:1"):
        fetch(fetcher, f"{host.url}/redirect?to={elsewhere}")


def test_redirects_are_bounded(host: ImageHost) -> None:
    fetcher = ImageFetcher(hosts=["127.0.0.1"], max_redirects=2)
    loop = f"{host.url}/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/digit.png"
    with pytest.raises(FetchError, match="redirected more than 2 times"):
        fetch(fetcher, loop)
    assert fetch(ImageFetcher(hosts=["127.0.0.1"], max_redirects=3), loop) == PNG


def test_a_url_that_does_not_answer_in_time_is_a_504(host: ImageHost) -> None:
    fetcher = ImageFetcher(hosts=["127.0.0.1"], timeout_s=0.3)
    with pytest.raises(FetchTimeoutError, match=r"within 0\.3 s") as waited:
        fetch(fetcher, f"{host.url}/hang")
    assert waited.value.status_code == 504


def test_the_time_bound_covers_the_whole_download(host: ImageHost) -> None:
    """A host that answers at once and then sends a byte every 50 ms never trips a read
    timeout, but the whole fetch is bounded."""
    fetcher = ImageFetcher(hosts=["127.0.0.1"], timeout_s=0.5)
    with pytest.raises(FetchTimeoutError):
        fetch(fetcher, f"{host.url}/trickle")


def test_reading_stops_past_the_size_limit(host: ImageHost) -> None:
    fetcher = ImageFetcher(hosts=["127.0.0.1"], max_bytes=1_000_000)
    with pytest.raises(PayloadTooLargeError, match="over 1,000,000 bytes") as refused:
        fetch(fetcher, f"{host.url}/big")
    assert refused.value.status_code == 413


def test_a_declared_length_over_the_limit_is_refused_unread(host: ImageHost) -> None:
    with pytest.raises(PayloadTooLargeError):
        fetch(ImageFetcher(hosts=["127.0.0.1"], max_bytes=100), f"{host.url}/digit.png")


def test_the_bytes_decide_what_was_fetched_not_the_header(host: ImageHost) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="not a PNG or JPEG") as refused:
        fetch(ImageFetcher(hosts=["127.0.0.1"]), f"{host.url}/page.png")
    assert "image/png" in str(refused.value)  # what the header claimed


def test_an_error_status_is_a_fetch_error(host: ImageHost) -> None:
    with pytest.raises(FetchError, match="answered 404"):
        fetch(ImageFetcher(hosts=["127.0.0.1"]), f"{host.url}/missing.png")


def test_a_host_that_refuses_connections_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="cannot fetch") as refused:
        fetch(ImageFetcher(hosts=["127.0.0.1"]), "http://127.0.0.1:1/digit.png")
    assert refused.value.status_code == 502


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://127.0.0.1/digit.png", "not an http or https URL"),
        ("file:///etc/passwd", "not an http or https URL"),
        ("http://user:secret@127.0.0.1/digit.png", "credentials"),
        ("not a url at all", "not an http or https URL"),
        ("http://127.0.0.1/" + "a" * 3000, "at most 2,048"),
    ],
)
def test_urls_that_are_never_fetched(url: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        fetch(ImageFetcher(hosts=["127.0.0.1"]), url)


def test_base64_images_in_every_usual_spelling() -> None:
    standard = base64.b64encode(PNG).decode()
    assert base64_image(standard, "x") == PNG
    assert base64_image(base64.urlsafe_b64encode(PNG).decode().rstrip("="), "x") == PNG
    assert base64_image(f"data:image/png;base64,{standard}", "x") == PNG
    with pytest.raises(InvalidInputError, match="x is not base64"):
        base64_image("not base64!", "x")
    with pytest.raises(InvalidInputError, match="non-empty base64 string"):
        base64_image(12, "x")


def test_ranked_classes_most_probable_first_bounded_by_the_classes() -> None:
    outputs = {"probabilities": np.array([[0.1, 0.7, 0.2]], dtype=np.float32)}
    ranked = ranked_classes(outputs, ["a", "b", "c"], 2)[0]
    assert [c["label"] for c in ranked] == ["b", "c"]
    assert ranked[0]["probability"] == pytest.approx(0.7)
    assert len(ranked_classes(outputs, ["a", "b", "c"], 10)[0]) == 3


def test_a_binary_classifier_ranks_both_classes() -> None:
    outputs = {"probability": np.array([0.8], dtype=np.float32)}
    ranked = ranked_classes(outputs, [0, 1], 5)[0]
    assert [(c["label"], round(c["probability"], 3)) for c in ranked] == [(1, 0.8), (0, 0.2)]


def test_a_regressor_has_no_classes_to_rank() -> None:
    with pytest.raises(SchemaError, match="not a classifier"):
        ranked_classes({"prediction": np.array([1.0], dtype=np.float32)}, [], 5)


def test_layout_of_a_table_model_refuses_images() -> None:
    layout = FeatureLayout({"features": ["a", "b"]})
    assert layout.image is None
    with pytest.raises(SchemaError, match="not an image model"):
        layout.from_images([digit()[1]])

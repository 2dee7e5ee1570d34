"""A scorer whose model classifies images: messages with an image URL (fetched from a real
HTTP server on 127.0.0.1) or a base64 image are scored with their top classes; messages
without a usable image are dead-lettered with the reason, and the rest of the batch scored."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from digits import digit, huge_png, png, register_digits
from image_host import ImageHost, image_host
from shipyard.inference.images import ImageFetcher
from shipyard.inference.service import InferenceService
from shipyard.messaging import QueueSpec, open_broker
from shipyard.registry import Registry
from shipyard.settings import Settings
from shipyard.stream.images import ImageBatch, ImageReader
from shipyard.stream.scorer import Scorer, ScorerConfig

from .conftest import Rig

pytestmark = pytest.mark.anyio

LABEL, IMAGE = digit(-1)
PNG = png(IMAGE)
ENCODED = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    with image_host({"digit.png": PNG}) as h:
        yield h


@pytest.fixture
async def rig(home: Path, host: ImageHost) -> AsyncIterator[Rig]:
    """A started scorer of digits@production over a fresh memory broker, allowed to fetch
    from 127.0.0.1 (0.5 s, 100 kB at most)."""
    registry = Registry.open(Settings(home=home))
    register_digits(registry)
    url = f"memory://images-{uuid.uuid4().hex}"
    # Redelivery well after the slowest fetch (0.5 s), so no message is delivered twice.
    broker, client = open_broker(url, redelivery_ms=30_000), open_broker(url, redelivery_ms=30_000)
    config = ScorerConfig(model="digits", top_k=3)
    service = InferenceService(registry, max_batch_size=256, max_batch_delay_ms=0)
    await service.start()
    fetcher = ImageFetcher(hosts=["127.0.0.1"], timeout_s=0.5, max_bytes=100_000)
    reader = ImageReader(fetcher, max_pixels=1_000_000)
    made = Rig(url, broker, client, Scorer(broker, service, config, images=reader), config)
    await client.declare(QueueSpec(config.queue))
    yield made
    if made.task is not None and not made.task.done():
        await made.stop()
    await service.close()
    await reader.close()
    await broker.close()
    await client.close()
    registry.close()


def message(message_id: str, **image: object) -> bytes:
    return orjson.dumps({"id": message_id, **image})


async def test_images_by_url_and_base64_are_scored_with_their_top_classes(
    rig: Rig, host: ImageHost
) -> None:
    await rig.publish(
        [
            message("by-url", image_url=f"{host.url}/digit.png"),
            message("inline", image_base64=ENCODED),
        ]
    )
    await rig.start()
    results = await rig.collect("results", 2)
    await rig.stop()
    assert sorted(r["id"] for r in results) == ["by-url", "inline"]
    for result in results:
        assert (result["model"], result["version"], result["label"]) == ("digits", 1, LABEL)
        top = result["top_k"]
        assert isinstance(top, list)
        assert len(top) == 3
        assert top[0]["label"] == LABEL
        assert result["score"] == pytest.approx(top[0]["probability"])


async def test_messages_without_a_usable_image_are_dead_lettered_with_the_reason(
    rig: Rig, host: ImageHost
) -> None:
    good = [message(f"ok{i}", image_base64=ENCODED) for i in range(5)]
    bad = {
        message("text", image_base64=base64.b64encode(b"not an image").decode()): "not a PNG",
        message("cut", image_base64=base64.b64encode(PNG[:40]).decode()): "truncated",
        message("huge", image_base64=base64.b64encode(huge_png()).decode()): "50,000,000 pixels",
        message("b64", image_base64="@@@"): "not base64",
        message("off", image_url="http://images.example.com/1.png"): "not fetched from",
        message("slow", image_url=f"{host.url}/hang"): "within 0.5 s",
        message("big", image_url=f"{host.url}/big"): "over 100,000 bytes",
        message(
            "away", image_url=f"{host.url}/redirect?to=http://localhost:9/x.png"
        ): "localhost:9",
        message("none"): 'give "image_url" or "image_base64"',
        message("both", image_url="x", image_base64=ENCODED): "(one)",
        orjson.dumps({"image_base64": ENCODED}): "no `id`",
        b"{not json": "not JSON",
    }
    await rig.publish(good[:2] + list(bad) + good[2:])
    await rig.start()
    results = await rig.collect("results", len(good))
    dead = await rig.collect("transactions.dead", len(bad))
    await rig.stop()
    assert sorted(r["id"] for r in results) == [f"ok{i}" for i in range(5)]
    assert len(dead) == len(bad)
    for record in dead:
        assert bad[str(record["body"]).encode()] in str(record["reason"]), record
    assert rig.scorer.stats.dead_lettered == {"bad_image": 10, "bad_id": 1, "not_json": 1}


async def test_a_table_message_for_an_image_model_is_refused(rig: Rig) -> None:
    await rig.publish([orjson.dumps({"id": "row", "pixel_0": 1.0})])
    await rig.start()
    (dead,) = await rig.collect("transactions.dead", 1)
    await rig.stop()
    assert "the model classifies images" in str(dead["reason"])


async def test_a_batch_split_by_a_model_failure_keeps_each_image() -> None:
    """``take`` is what the scorer scores one by one when the model fails on a batch."""
    batch = ImageBatch([0, 2], ["a", "c"], [IMAGE, IMAGE], [])
    assert (batch.take(2).positions, batch.take(2).ids) == ([0], ["c"])
    assert batch.take(1).positions == []

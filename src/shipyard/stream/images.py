"""Stream messages that carry an image, for a scorer whose model is an image model.

Such an input names its image by URL or holds it, base64-encoded::

    {"id": "photo-1", "image_url": "https://images.example.com/1.png"}
    {"id": "photo-2", "image_base64": "iVBORw0KGgo…"}

URLs are fetched as the HTTP route fetches them (``shipyard.inference.images``: the hosts of
``image_url_hosts`` only, bounded in size and time), several at once. A message without a
usable image — not JSON, no ``id``, neither field or both, a URL refused or that gives no
image, bytes that are not a PNG or JPEG, too many pixels — is refused with the reason and
dead-lettered (kind ``bad_image``); the rest of its batch is scored. Results carry the
``label`` and the ``top_k`` classes with their probabilities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
from PIL.Image import Image

from shipyard.data.images import MAX_PIXELS
from shipyard.errors import ShipyardError
from shipyard.inference.images import ImageFetcher, base64_image, decode_image
from shipyard.inference.inputs import FeatureLayout
from shipyard.registry.monitoring import MAX_ID_LENGTH
from shipyard.settings import Settings
from shipyard.stream.messages import BAD_ID, ID, NOT_JSON, Inputs, Refusal, id_problem

BAD_IMAGE = "bad_image"
URL = "image_url"
BASE64 = "image_base64"
#: URLs of one batch fetched at once at most.
FETCHES_AT_ONCE = 16


@dataclass(frozen=True)
class ImageBatch:
    """A batch's image messages read: the decoded images with their positions and ids, and
    the messages refused."""

    positions: list[int]
    ids: list[str]
    images: list[Image]
    refused: list[Refusal]

    def inputs(self, layout: FeatureLayout) -> Inputs:
        """The images as rows of ``layout`` (an image model's pixels)."""
        if not self.images:
            features = np.empty((0, layout.width), dtype=np.float32)
        else:
            features = layout.from_images(self.images)
        return Inputs(features, list(self.positions), list(self.ids), list(self.refused))

    def take(self, position: int) -> ImageBatch:
        """The part of the batch that is message ``position``, as a batch of one."""
        for i, kept in enumerate(self.positions):
            if kept == position:
                return ImageBatch([0], [self.ids[i]], [self.images[i]], [])
        refused = [Refusal(0, r.kind, r.reason) for r in self.refused if r.position == position]
        return ImageBatch([], [], [], refused)


@dataclass
class ImageReader:
    """Reads image messages: fetches their URLs with ``fetcher``, decodes within
    ``max_pixels``."""

    fetcher: ImageFetcher = field(default_factory=ImageFetcher)
    max_pixels: int = MAX_PIXELS

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageReader:
        """The reader the ``image_*`` settings describe."""
        return cls(ImageFetcher.from_settings(settings), settings.image_max_pixels)

    async def close(self) -> None:
        """Close the fetcher's connections."""
        await self.fetcher.close()

    async def read(self, bodies: Sequence[bytes]) -> ImageBatch:
        """Each body's image, or why it has none."""
        limit = asyncio.Semaphore(FETCHES_AT_ONCE)
        read = await asyncio.gather(*(self._read_one(body, limit) for body in bodies))
        batch = ImageBatch([], [], [], [])
        for position, outcome in enumerate(read):
            if isinstance(outcome, Refusal):
                batch.refused.append(Refusal(position, outcome.kind, outcome.reason))
            else:
                batch.positions.append(position)
                batch.ids.append(outcome[0])
                batch.images.append(outcome[1])
        return batch

    async def _read_one(self, body: bytes, limit: asyncio.Semaphore) -> tuple[str, Image] | Refusal:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            return Refusal(0, NOT_JSON, f"not JSON in UTF-8 ({error})")
        if not isinstance(message, dict):
            return Refusal(0, NOT_JSON, f'not a JSON object of an id and "{URL}" or "{BASE64}"')
        message_id = message.get(ID)
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID_LENGTH:
            return Refusal(0, BAD_ID, id_problem(message_id))
        if (URL in message) == (BASE64 in message):
            return Refusal(
                0, BAD_IMAGE, f'the model classifies images: give "{URL}" or "{BASE64}" (one)'
            )
        try:
            if BASE64 in message:
                data = base64_image(message[BASE64], f"`{BASE64}`")
            elif not isinstance(message[URL], str):
                return Refusal(0, BAD_IMAGE, f"`{URL}` must be a string: an http or https URL")
            else:
                async with limit:
                    data = await self.fetcher.fetch(message[URL])
            return message_id, await decode_image(data, max_pixels=self.max_pixels)
        except ShipyardError as error:
            if error.retryable:
                raise
            return Refusal(0, BAD_IMAGE, str(error))

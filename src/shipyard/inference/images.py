"""Images to classify, from whoever sends them: fetched by URL, decoded, answered as classes.

The HTTP route (``POST /v1/models/{name}:classify``, OIP ``BYTES`` inputs) and the stream
scorer (``image_url`` / ``image_base64`` messages) both come here; the pixels an image model
reads are ``FeatureLayout.from_images`` (``shipyard.data.images`` is the contract).

**Fetching a URL** is a request this server makes on a caller's behalf, so ``ImageFetcher``
only goes where the operator allowed (``image_url_hosts``; empty by default: every URL is
refused), over http or https, never with credentials in the URL. It follows redirects itself,
checking every hop against the same list (at most ``image_url_max_redirects``), stops reading
past ``image_url_max_bytes`` (413), bounds the whole fetch — connecting, waiting, reading,
every hop — by ``image_url_timeout_seconds`` (504), and lets the bytes, never the
``Content-Type`` header, decide what they are: the first bytes that are not a PNG or JPEG
end the download (415).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL.Image import Image

from shipyard.data.images import SIGNATURES, open_image, sniff
from shipyard.errors import (
    FetchError,
    FetchTimeoutError,
    InvalidInputError,
    PayloadTooLargeError,
    PermissionDeniedError,
    SchemaError,
    UnsupportedMediaTypeError,
)
from shipyard.inference.predictor import Outputs
from shipyard.settings import Settings

#: Images larger than this are decoded in a thread, so the event loop keeps answering; the
#: small ones a model reads (a few KB) cost less than the hop to a thread.
DECODE_IN_THREAD_BYTES = 256 * 1024
MAX_URL_LENGTH = 2048
REDIRECTS = frozenset({301, 302, 303, 307, 308})
HOSTS_SETTING = "SHIPYARD_IMAGE_URL_HOSTS"
SNIFF_BYTES = max(len(signature) for signature, _ in SIGNATURES)


@dataclass
class ImageFetcher:
    """Fetches image bytes by URL within the operator's allow-list and bounds."""

    hosts: Sequence[str] = ()
    """``host`` (any port) or ``host:port`` entries; case does not matter."""
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    _client: httpx.AsyncClient | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageFetcher:
        """The fetcher the ``image_url_*`` settings describe."""
        return cls(
            hosts=settings.image_url_hosts,
            max_bytes=settings.image_url_max_bytes,
            timeout_s=settings.image_url_timeout_seconds,
            max_redirects=settings.image_url_max_redirects,
        )

    async def close(self) -> None:
        """Close the connections kept for later fetches."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def allows(self, host: str, port: int | None) -> bool:
        """Whether ``host`` (on ``port``) is on the allow-list."""
        host = host.lower()
        for entry in self.hosts:
            entry = entry.strip().lower()
            allowed_host, _, allowed_port = entry.rpartition(":")
            if allowed_port.isdigit() and not entry.endswith("]"):  # host:port, [v6]:port
                if allowed_host.strip("[]") == host and int(allowed_port) == port:
                    return True
            elif entry.strip("[]") == host:
                return True
        return False

    def check(self, url: str | httpx.URL) -> httpx.URL:
        """The URL parsed, if this fetcher may go there; else why not and how to allow it."""
        text = str(url)
        if len(text) > MAX_URL_LENGTH:
            raise InvalidInputError(f"the image URL is {len(text):,} characters; at most 2,048")
        try:
            parsed = httpx.URL(text)
        except (httpx.InvalidURL, TypeError, ValueError) as error:
            raise InvalidInputError(f"{text[:200]!r} is not a URL ({error})") from error
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInputError(
                f"{text[:200]!r} is not an http or https URL; only those are fetched"
            )
        if parsed.userinfo:
            raise InvalidInputError(
                "the image URL holds credentials (user:password@); they are never sent: "
                "make the image readable without them"
            )
        if not self.allows(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)):
            where = f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
            if not self.hosts:
                how = f"no host is allowed: set {HOSTS_SETTING}='[\"{parsed.host}\"]'"
            else:
                how = f"add it to {HOSTS_SETTING} (now {list(self.hosts)})"
            raise PermissionDeniedError(
                f"images are not fetched from {where}: {how}, or upload the image instead"
            )
        return parsed

    async def fetch(self, url: str) -> bytes:
        """The bytes of the image at ``url``: a PNG or JPEG of at most ``max_bytes``."""
        target = self.check(url)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(target)
        except (TimeoutError, httpx.TimeoutException) as error:
            raise FetchTimeoutError(
                f"{target} did not deliver its image within {self.timeout_s:g} s; try a "
                "faster host, or upload the image instead"
            ) from error
        except httpx.HTTPError as error:
            raise FetchError(f"cannot fetch {target} ({type(error).__name__}: {error})") from error

    async def _follow(self, target: httpx.URL) -> bytes:
        client = self._client_now()
        for _ in range(self.max_redirects + 1):
            async with client.stream("GET", target) as response:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    target = self.check(target.join(response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise FetchError(
                        f"{target} answered {response.status_code} {response.reason_phrase}, "
                        "not an image"
                    )
                return await self._read(target, response)
        raise FetchError(
            f"{url_text(target)} redirected more than {self.max_redirects} times; "
            "give the image's own URL"
        )

    async def _read(self, target: httpx.URL, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(target, int(declared))
        chunks: list[bytes] = []
        size = 0
        sniffed = False
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(target, size)
            if not sniffed and size >= SNIFF_BYTES:
                head = b"".join(chunks)
                if sniff(head) is None:  # the bytes decide, whatever the header says
                    raise UnsupportedMediaTypeError(
                        f"{url_text(target)} is not a PNG or JPEG image (it starts with "
                        f"{head[:8]!r}, sent as {response.headers.get('content-type')!r})"
                    )
                sniffed = True
        return b"".join(chunks)

    def _too_large(self, target: httpx.URL, size: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"{url_text(target)} is over {self.max_bytes:,} bytes (at least {size:,}); "
            "images that large are not fetched: scale it down"
        )

    def _client_now(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,  # every hop is checked against the allow-list
                trust_env=False,  # no proxy or .netrc credentials from the environment
                timeout=httpx.Timeout(self.timeout_s),
                headers={"accept": "image/png, image/jpeg"},
            )
        return self._client


def url_text(url: httpx.URL) -> str:
    """A URL as messages show it (at most 200 characters)."""
    text = str(url)
    return text if len(text) <= 200 else f"{text[:200]}…"


async def decode_image(data: bytes, *, max_pixels: int) -> Image:
    """``open_image`` — in a thread when the file is large, so one big image does not hold
    every other request."""
    if len(data) > DECODE_IN_THREAD_BYTES:
        return await asyncio.to_thread(open_image, data, max_pixels=max_pixels)
    return open_image(data, max_pixels=max_pixels)


def base64_image(text: Any, what: str) -> bytes:
    """The bytes of a base64-encoded image (standard or URL-safe alphabet, padding optional,
    a ``data:image/...;base64,`` prefix allowed)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("ascii", errors="replace")
    if not isinstance(text, str) or not text:
        raise InvalidInputError(f"{what} must be a non-empty base64 string of a PNG or JPEG")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInputError(
            f"{what} is not base64 ({error}); send the image file's bytes base64-encoded"
        ) from error


def class_probabilities(outputs: Outputs) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Each row's probability of every class, in the classes' order (a binary classifier's
    ``probability`` of its second class made into two columns)."""
    if "probabilities" in outputs:
        return np.asarray(outputs["probabilities"], dtype=np.float32)
    if "probability" in outputs:
        positive = np.asarray(outputs["probability"], dtype=np.float32).reshape(-1)
        return np.column_stack([1.0 - positive, positive])
    raise SchemaError("the model is not a classifier: it gives no class probabilities")


def ranked_classes(
    outputs: Outputs, classes: Sequence[Any], top_k: int
) -> list[list[dict[str, Any]]]:
    """For each row, its ``top_k`` most probable classes (fewer if the model has fewer), most
    probable first: ``{"label": …, "probability": …}``."""
    probabilities = class_probabilities(outputs)
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k].tolist()
    return [
        [{"label": classes[j], "probability": row[j]} for j in indices]
        for row, indices in zip(probabilities.tolist(), order, strict=True)
    ]

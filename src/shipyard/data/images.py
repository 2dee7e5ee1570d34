"""Images as model inputs: how an image model wants its pixels, and raw bytes turned into them.

An image model is a table model whose features are pixels: ``pixel_0 … pixel_{H·W·C-1}`` in
row-major order (row, then column, then channel), each between 0 and ``max_value``. Its
``ImageFormat`` — size, colour mode, value range — is recorded in the signed manifest
(``input_schema["image"]``), so that a client sends a raw PNG or JPEG and the server, a stream
worker or a pipeline reading an image folder turns it into exactly the features the model was
trained on with ``image_features``. Scaling and normalising beyond that range is part of the
exported model itself.

``open_image`` is the one door for untrusted bytes: it sniffs the type from the bytes (never
from a file name or a header), bounds the pixel count before decoding (a 50-megapixel PNG is
refused with 413 without being decoded), and decodes completely, so a truncated file fails
here rather than later.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from shipyard.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError

#: The most pixels (width × height) an image to classify may have unless a caller says
#: otherwise: 4096 × 4096. Decoding is what costs, so larger images are refused unread.
MAX_PIXELS = 16_777_216

#: Magic bytes of the image types accepted, and their media types.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)

FEATURE_PREFIX = "pixel_"


class ImageFormat(BaseModel):
    """What an image model consumes: ``height`` × ``width`` pixels in ``mode`` ("L": one
    grey channel, "RGB": three), each scaled from 0–255 to 0–``max_value``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(ge=1, le=4096)
    height: int = Field(ge=1, le=4096)
    mode: Literal["L", "RGB"]
    max_value: float = Field(default=255.0, gt=0)

    @property
    def channels(self) -> int:
        """Values per pixel."""
        return 1 if self.mode == "L" else 3

    @property
    def size(self) -> int:
        """Features per image: height × width × channels."""
        return self.height * self.width * self.channels

    def feature_names(self) -> list[str]:
        """``pixel_0`` … in row-major, channel-last order."""
        return [f"{FEATURE_PREFIX}{i}" for i in range(self.size)]

    @classmethod
    def of_schema(cls, input_schema: dict[str, Any]) -> ImageFormat | None:
        """The image format a model's input schema records; None for a table model."""
        image = input_schema.get("image")
        return None if image is None else cls.model_validate(image)


def sniff(data: bytes) -> str | None:
    """The media type the bytes start with (``image/png``, ``image/jpeg``), else None."""
    for signature, media_type in SIGNATURES:
        if data.startswith(signature):
            return media_type
    return None


def open_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a PNG or JPEG completely after checking its type and pixel count.

    ``UnsupportedMediaTypeError`` (415) for bytes that are not PNG or JPEG,
    ``PayloadTooLargeError`` (413) above ``max_pixels``, ``InvalidInputError`` (400) for a
    truncated or corrupt file."""
    if not data:
        raise InvalidInputError("the image is empty; send the bytes of a PNG or JPEG file")
    media_type = sniff(data)
    if media_type is None:
        raise UnsupportedMediaTypeError(
            f"the {len(data):,} bytes sent are not a PNG or JPEG image (they start with "
            f"{data[:8]!r}); send a PNG or JPEG file"
        )
    kind = media_type.removeprefix("image/").upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind])
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise PayloadTooLargeError(
                    f"the {kind} image is {image.width}×{image.height} = {pixels:,} pixels; "
                    f"at most {max_pixels:,} are accepted: scale it down before sending"
                )
            image.load()
    except PayloadTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PayloadTooLargeError(
            f"the {kind} image is too large to decode ({error}); scale it down before sending"
        ) from error
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise InvalidInputError(
            f"the {kind} image cannot be decoded ({error}); it may be truncated or corrupt: "
            "send the whole file"
        ) from error
    return image


def image_features(image: Image.Image, fmt: ImageFormat) -> npt.NDArray[np.float32]:
    """The model's features of one decoded image: converted to the format's mode, resized to
    its size when it differs, scaled to 0–``max_value``; a flat float32 vector."""
    if image.mode != fmt.mode:
        transparent = image.mode == "P" and "transparency" in image.info
        if image.mode in ("RGBA", "LA", "PA") or transparent:
            # Transparent pixels over black, as the training images have no alpha.
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert(fmt.mode)
    if image.size != (fmt.width, fmt.height):
        image = image.resize((fmt.width, fmt.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(-1)
    if fmt.max_value != 255.0:
        pixels *= np.float32(fmt.max_value / 255.0)
    return pixels


def features_image(features: npt.NDArray[Any], fmt: ImageFormat) -> Image.Image:
    """The inverse of ``image_features``: one row of pixel features as an 8-bit image (to
    write a dataset's images as PNG files, e.g. for an image folder or a demo request)."""
    values = np.asarray(features, dtype=np.float64).reshape(-1)
    if values.size != fmt.size:
        raise InvalidInputError(f"{values.size} values are not a {fmt.width}×{fmt.height} image")
    scaled = np.clip(np.rint(values * (255.0 / fmt.max_value)), 0, 255).astype(np.uint8)
    shape = (fmt.height, fmt.width) if fmt.mode == "L" else (fmt.height, fmt.width, 3)
    return Image.fromarray(scaled.reshape(shape), mode=fmt.mode)

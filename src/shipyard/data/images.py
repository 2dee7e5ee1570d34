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

import hashlib
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field

from shipyard.data.schema import TableSchema
from shipyard.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ShipyardError,
    UnsupportedMediaTypeError,
)

#: The most pixels (width × height) an image to classify may have unless a caller says
#: otherwise: 4096 × 4096. Decoding is what costs, so larger images are refused unread.
MAX_PIXELS = 16_777_216

#: Magic bytes of the image types accepted, and their media types.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)

#: The Pillow plugin class that reads each accepted media type.
DECODERS: dict[str, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
    "image/png": PngImagePlugin.PngImageFile,
    "image/jpeg": JpegImagePlugin.JpegImageFile,
}

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
        # The plugin's own class, as the bytes were sniffed: ``Image.open`` would try the
        # type again, and its decompression-bomb limit is replaced by ``max_pixels``.
        image = DECODERS[media_type](io.BytesIO(data))
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise PayloadTooLargeError(
                f"the {kind} image is {image.width}×{image.height} = {pixels:,} pixels; "
                f"at most {max_pixels:,} are accepted: scale it down before sending"
            )
        image.load()
    except PayloadTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError, IndexError, TypeError, struct.error) as error:
        # What Pillow's plugins raise for a file they cannot read (Image.open turns the
        # last four into UnidentifiedImageError).
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
    # Row-major channel-last bytes, as ``np.asarray(image)`` has them, without its detour.
    pixels = np.frombuffer(image.tobytes(), dtype=np.uint8).astype(np.float32)
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


@dataclass(frozen=True)
class LabelledImages:
    """Images as a model's features with a label each: ``pixels`` is rows × ``fmt.size``
    (channel-last, 0–``max_value``), ``labels`` one class per row."""

    pixels: npt.NDArray[np.float32]
    labels: npt.NDArray[Any]
    fmt: ImageFormat

    def frame(self, target: str = "label") -> pd.DataFrame:
        """The images as a table: columns ``pixel_0 …`` then ``target``."""
        frame = pd.DataFrame(
            self.pixels.astype(np.float64, copy=False), columns=self.fmt.feature_names()
        )
        frame[target] = self.labels
        return frame

    def digest(self) -> str:
        """The sha256 of the format, pixels and labels, for a run's lineage."""
        digest = hashlib.sha256(self.fmt.model_dump_json().encode())
        digest.update(np.ascontiguousarray(self.pixels, dtype=np.float32).tobytes())
        digest.update("\n".join(str(label) for label in self.labels.tolist()).encode())
        return digest.hexdigest()


#: The format of scikit-learn's ``digits``: 8×8 grey, values 0–16.
DIGITS_FORMAT = ImageFormat(width=8, height=8, mode="L", max_value=16)


def load_digits() -> LabelledImages:
    """scikit-learn's 1,797 handwritten digits (shipped with it; nothing is downloaded),
    labelled 0–9."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.asarray(bunch.data, dtype=np.float32)
    return LabelledImages(pixels, np.asarray(bunch.target, dtype=np.int64), DIGITS_FORMAT)


def read_image_folder(folder: Path, fmt: ImageFormat) -> LabelledImages:
    """A folder with one sub-folder of PNG or JPEG files per class, each image decoded by
    ``open_image`` and turned into ``fmt``'s features by ``image_features`` — exactly what a
    model served with ``fmt`` receives. The sub-folder names are the labels; files and
    folders whose names start with a dot are skipped."""
    if not folder.is_dir():
        raise NotFoundError(
            f"no image folder at {folder.absolute()}; give a folder with one sub-folder of "
            "PNG or JPEG files per class"
        )
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        found = ", ".join(p.name for p in classes) or "none"
        raise InvalidInputError(
            f"{folder} has {len(classes)} class folder(s) ({found}); a classifier needs at "
            "least 2: put each class's images in a sub-folder named after the class"
        )
    rows: list[npt.NDArray[np.float32]] = []
    labels: list[str] = []
    for class_folder in classes:
        files = sorted(
            p for p in class_folder.iterdir() if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            raise InvalidInputError(
                f"class folder {class_folder} holds no image; add PNG or JPEG files or "
                "remove the folder"
            )
        for path in files:
            try:
                image = open_image(path.read_bytes())
            except ShipyardError as error:
                raise InvalidInputError(
                    f"{path}: {error}; remove it from the image folder"
                ) from error
            rows.append(image_features(image, fmt))
            labels.append(class_folder.name)
    pixels = np.stack(rows).astype(np.float32, copy=False)
    return LabelledImages(pixels, np.asarray(labels, dtype=object), fmt)


def write_image_folder(images: LabelledImages, folder: Path) -> list[Path]:
    """Write each image as ``folder/LABEL/NUMBER.png`` (the layout ``read_image_folder``
    reads); the files written."""
    written = []
    for index, (row, label) in enumerate(zip(images.pixels, images.labels.tolist(), strict=True)):
        class_folder = folder / str(label)
        class_folder.mkdir(parents=True, exist_ok=True)
        path = class_folder / f"{index:05d}.png"
        features_image(row, images.fmt).save(path, format="PNG")
        written.append(path)
    return written


#: The most pixel columns an image model's reference profile keeps. Profiling all 3,072
#: columns of 32×32 RGB images took 2.8 s for 1,600 rows and about 5 KB of JSON per column;
#: an evenly spaced sample tells drift (brightness, contrast, framing) as well.
PROFILED_PIXELS = 64


def profiled_schema(schema: TableSchema) -> TableSchema:
    """``schema`` with at most ``PROFILED_PIXELS`` evenly spaced pixel features (and its
    target): the columns an image model's reference profile describes."""
    features = schema.features
    if len(features) <= PROFILED_PIXELS:
        return schema
    keep = {int(i) for i in np.linspace(0, len(features) - 1, PROFILED_PIXELS).round()}
    columns = [column for index, column in enumerate(features) if index in keep]
    target = [schema.column(schema.target)] if schema.target is not None else []
    return TableSchema(columns=[*columns, *target], target=schema.target)

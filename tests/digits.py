"""A small real image model for the tests that classify images: scikit-learn's 8×8 digits
(grey, values 0–16) learnt by an MLP, exported to ONNX with the image format in its input
schema, and PNG files of digits to send it."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

from shipyard.data.images import ImageFormat, features_image
from shipyard.inference import ExportedModel, export_model
from shipyard.registry import ModelVersionInfo, Registry

DIGITS_FORMAT = ImageFormat(width=8, height=8, mode="L", max_value=16)
TEST_IMAGES = 100  # the last images of the set, kept out of training


@functools.cache
def digits_model() -> ExportedModel:
    """The MLP on all but the last ``TEST_IMAGES`` digits, as an image model (a second or
    two to train; made once per process)."""
    digits = load_digits()
    x, y = digits.data[:-TEST_IMAGES], digits.target[:-TEST_IMAGES]
    fitted = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(x, y)
    exported = export_model(
        fitted, feature_names=DIGITS_FORMAT.feature_names(), task="classification"
    )
    exported.input_schema["image"] = DIGITS_FORMAT.model_dump()
    return exported


def register_digits(
    registry: Registry, name: str = "digits", promote: str | None = "production"
) -> ModelVersionInfo:
    """The digits model as the next version of ``name``, promoted to ``promote``."""
    model = digits_model()
    info = registry.register_version(
        name,
        files=model.files,
        format=model.format,
        input_schema=model.input_schema,
        output_schema=model.output_schema,
        metrics={"accuracy": 0.97},
    )
    if promote is not None:
        registry.promote(f"{name}:{info.version}", promote)
    return info


def digit(index: int = -1) -> tuple[int, Image.Image]:
    """A held-out digit (its class and an 8×8 grey image of it)."""
    digits = load_digits()
    return int(digits.target[index]), features_image(digits.data[index], DIGITS_FORMAT)


def png(image: Image.Image, scale: int = 1) -> bytes:
    """The image as a PNG file, enlarged ``scale`` times (nearest: the same pixels)."""
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    """The image as a JPEG file (RGB)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def huge_png(width: int = 8000, height: int = 6250) -> bytes:
    """A black PNG of ``width`` × ``height`` (50 megapixels by default): a few hundred KB,
    but far beyond what may be decoded."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), dtype=np.uint8), mode="L").save(
        buffer, format="PNG", optimize=False, compress_level=9
    )
    return buffer.getvalue()

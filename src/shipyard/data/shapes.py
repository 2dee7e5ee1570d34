"""``shapes``: a generated stand-in for CIFAR-10, 32×32 RGB images in ten visual classes.

Five classes are shapes drawn on a background — ``disc``, ``ring``, ``square``, ``frame``
(a hollow square), ``triangle`` — two are strokes — ``plus`` and ``cross`` (an X) — and
three are textures filling the image — ``hstripes``, ``vstripes``, ``checker``. Nothing
but the form tells the classes apart: every image draws its own background and foreground
colours (kept apart in brightness so the form is visible), its own size, position and
thickness (stripe period and phase for textures), and Gaussian noise on every channel.
A small convolutional network learns them (over 95 % accuracy on a few thousand images);
a pixel-wise model finds them much harder, as with real photographs.

``generate_shapes`` returns the images and labels; ``shipyard data generate shapes`` writes
them in the CIFAR-10 binary format (``data/cifar.py``) so that the reader for the real
CIFAR-10 files is exercised by the same pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from shipyard.errors import InvalidInputError

SIZE = 32
SHAPE_CLASSES: tuple[str, ...] = (
    "disc",
    "ring",
    "square",
    "frame",
    "triangle",
    "plus",
    "cross",
    "hstripes",
    "vstripes",
    "checker",
)
#: The noise added to every channel of every pixel (standard deviation, 0–255 scale).
NOISE_STD = 12.0


def generate_shapes(
    count: int, *, seed: int = 0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """``count`` images of shape (count, 32, 32, 3) and their class numbers (indexes into
    ``SHAPE_CLASSES``), the classes in turn so that each has count // 10 or one more."""
    if count < 1:
        raise InvalidInputError(f"generate at least 1 image, not {count}")
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.int64) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    images = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    for index, label in enumerate(labels):
        mask = _mask(SHAPE_CLASSES[label], rows, cols, rng)
        background, foreground = _colours(rng)
        image = np.where(mask[..., None], foreground, background)
        image = image + rng.normal(0.0, NOISE_STD, size=image.shape)
        images[index] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return images, labels


def _colours(rng: np.random.Generator) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A background and a foreground colour at least 70 apart in mean brightness."""
    for _ in range(100):
        background, foreground = rng.uniform(0, 255, size=(2, 3))
        if abs(float(background.mean() - foreground.mean())) >= 70:
            return background, foreground
    return np.full(3, 30.0), np.full(3, 220.0)  # unreachable in practice: bounded retries


def _mask(
    name: str,
    rows: npt.NDArray[np.float64],
    cols: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> npt.NDArray[np.bool_]:
    """Where the foreground colour goes for one image of class ``name``."""
    return np.asarray(_draw(name, rows, cols, rng), dtype=np.bool_)


def _draw(
    name: str,
    rows: npt.NDArray[np.float64],
    cols: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> Any:
    if name in ("hstripes", "vstripes", "checker"):
        period = rng.uniform(5.0, 10.0)
        phase_r, phase_c = rng.uniform(0, period, size=2)
        band_r = np.floor((rows + phase_r) / period * 2) % 2 == 0
        band_c = np.floor((cols + phase_c) / period * 2) % 2 == 0
        if name == "hstripes":
            return band_r
        if name == "vstripes":
            return band_c
        return band_r ^ band_c
    radius = rng.uniform(7.0, 12.0)
    centre_r, centre_c = rng.uniform(radius + 1, SIZE - radius - 1, size=2)
    dr, dc = rows - centre_r, cols - centre_c
    thickness = rng.uniform(2.5, 4.0)
    if name == "disc":
        return dr**2 + dc**2 <= radius**2
    if name == "ring":
        distance = np.sqrt(dr**2 + dc**2)
        return (distance <= radius) & (distance >= radius - thickness)
    if name == "square":
        return (np.abs(dr) <= radius * 0.85) & (np.abs(dc) <= radius * 0.85)
    if name == "frame":
        edge = np.maximum(np.abs(dr), np.abs(dc))
        return (edge <= radius * 0.85) & (edge >= radius * 0.85 - thickness)
    if name == "triangle":
        # Apex up: the half-width grows linearly from the top row to the base.
        top, base = -radius, radius * 0.8
        depth = (dr - top) / (base - top)
        return (depth >= 0) & (depth <= 1) & (np.abs(dc) <= depth * radius)
    half = thickness / 2
    if name == "plus":
        arm = (np.abs(dr) <= radius) & (np.abs(dc) <= radius)
        return arm & ((np.abs(dr) <= half) | (np.abs(dc) <= half))
    if name == "cross":
        arm = (np.abs(dr) <= radius * 0.8) & (np.abs(dc) <= radius * 0.8)
        return arm & ((np.abs(dr - dc) <= half * 1.4) | (np.abs(dr + dc) <= half * 1.4))
    raise InvalidInputError(f"no shape class {name!r}; classes: {', '.join(SHAPE_CLASSES)}")

"""Datasets: table schemas, generators, readers and writers, and reference profiles.

``DATASETS`` is the catalogue of named datasets the CLI and pipeline specs can generate.
This package imports nothing from the rest of Shipyard except ``shipyard.errors``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shipyard.data.fraud import (
    DRIFT_SCENARIOS,
    FRAUD_SCHEMA,
    drift_fraud,
    drifted_features,
    generate_fraud,
)
from shipyard.data.housing import HOUSING_SCHEMA, generate_housing
from shipyard.data.images import DIGITS_FORMAT, ImageFormat, LabelledImages, load_digits
from shipyard.data.profile import profile_frame, profile_values
from shipyard.data.schema import Column, TableSchema
from shipyard.data.shapes import SHAPE_CLASSES, generate_shapes
from shipyard.data.table import file_sha256, read_table, write_table
from shipyard.errors import InvalidInputError

__all__ = [
    "DATASETS",
    "DRIFT_SCENARIOS",
    "FRAUD_SCHEMA",
    "HOUSING_SCHEMA",
    "IMAGE_DATASETS",
    "Column",
    "Dataset",
    "ImageDataset",
    "ImageFormat",
    "LabelledImages",
    "TableSchema",
    "drift_fraud",
    "drifted_features",
    "file_sha256",
    "generate_fraud",
    "generate_housing",
    "get_dataset",
    "get_image_dataset",
    "profile_frame",
    "profile_values",
    "read_table",
    "write_table",
]


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its schema, a generator taking ``(rows, seed)`` and, when it can
    drift, ``drift(frame, scenario, strength, share, seed)`` with its ``drift_scenarios``."""

    name: str
    description: str
    schema: TableSchema
    generate: Callable[[int, int], pd.DataFrame]
    drift: Callable[[pd.DataFrame, str, float | None, float | None, int], pd.DataFrame] | None = (
        None
    )
    drift_scenarios: Mapping[str, str] = field(default_factory=dict)


def _generate_fraud(rows: int, seed: int) -> pd.DataFrame:
    return generate_fraud(rows, seed=seed)


def _generate_housing(rows: int, seed: int) -> pd.DataFrame:
    return generate_housing(rows, seed=seed)


def _drift_fraud(
    frame: pd.DataFrame, scenario: str, strength: float | None, share: float | None, seed: int
) -> pd.DataFrame:
    return drift_fraud(frame, scenario, strength=strength, share=share, seed=seed)


DATASETS: dict[str, Dataset] = {
    "fraud": Dataset(
        name="fraud",
        description=(
            "Card transactions like the public credit-card fraud set: Time, V1..V28, Amount "
            "-> Class (1 = fraud, 0.5% of rows)"
        ),
        schema=FRAUD_SCHEMA,
        generate=_generate_fraud,
        drift=_drift_fraud,
        drift_scenarios=DRIFT_SCENARIOS,
    ),
    "housing": Dataset(
        name="housing",
        description=(
            "House sales in one city: area_m2, rooms, age_years, floor, latitude, longitude, "
            "distance_km -> price (euros; non-linear in location, size and age)"
        ),
        schema=HOUSING_SCHEMA,
        generate=_generate_housing,
    ),
}


@dataclass(frozen=True)
class ImageDataset:
    """A named set of labelled images: their format, and ``load(rows, seed)``; a generated
    set makes ``rows`` images (``default_rows`` when None), a fixed one has ``rows is None``
    only."""

    name: str
    description: str
    fmt: ImageFormat
    load: Callable[[int | None, int], LabelledImages]
    default_rows: int | None = None
    """None for a fixed set, which cannot make more or fewer images."""


def _load_digits(rows: int | None, seed: int) -> LabelledImages:
    return load_digits()


def _generate_shapes(rows: int | None, seed: int) -> LabelledImages:
    from shipyard.data.cifar import CIFAR_FORMAT

    images, labels = generate_shapes(rows or SHAPES_DEFAULT_ROWS, seed=seed)
    pixels = images.reshape(len(images), -1).astype(np.float32)
    return LabelledImages(pixels, np.asarray(SHAPE_CLASSES, dtype=object)[labels], CIFAR_FORMAT)


#: How many images ``shapes`` makes unless told.
SHAPES_DEFAULT_ROWS = 3000

IMAGE_DATASETS: dict[str, ImageDataset] = {
    "digits": ImageDataset(
        name="digits",
        description="scikit-learn's 1,797 handwritten digits: 8×8 grey, values 0–16 -> 0–9",
        fmt=DIGITS_FORMAT,
        load=_load_digits,
    ),
    "shapes": ImageDataset(
        name="shapes",
        description=(
            "Generated 32×32 RGB images in 10 classes (disc, ring, square, frame, triangle, "
            "plus, cross, hstripes, vstripes, checker), written in the CIFAR-10 binary format"
        ),
        fmt=ImageFormat(width=32, height=32, mode="RGB"),
        load=_generate_shapes,
        default_rows=SHAPES_DEFAULT_ROWS,
    ),
}


def get_image_dataset(name: str) -> ImageDataset:
    """The image dataset called ``name``; ``InvalidInputError`` listing the names if none."""
    try:
        return IMAGE_DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(IMAGE_DATASETS))
        raise InvalidInputError(
            f"unknown image dataset {name!r}; known image datasets: {known}"
        ) from None


def get_dataset(name: str) -> Dataset:
    """The dataset registered as ``name``; ``InvalidInputError`` listing the names if none."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise InvalidInputError(f"unknown dataset {name!r}; known datasets: {known}") from None

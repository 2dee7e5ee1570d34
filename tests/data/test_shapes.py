"""The ``shapes`` generator: reproducible, balanced, and told apart by form, not colour."""

from __future__ import annotations

import numpy as np
import pytest

from shipyard.data import IMAGE_DATASETS, get_image_dataset
from shipyard.data.shapes import SHAPE_CLASSES, generate_shapes
from shipyard.errors import InvalidInputError


def test_same_seed_same_images_other_seed_other_images() -> None:
    images, labels = generate_shapes(50, seed=3)
    again, again_labels = generate_shapes(50, seed=3)
    other, _ = generate_shapes(50, seed=4)
    assert images.shape == (50, 32, 32, 3)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert not np.array_equal(images, other)


def test_every_class_is_drawn_equally_often() -> None:
    _, labels = generate_shapes(205, seed=0)
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert counts.min() == 20
    assert counts.max() == 21


def test_colour_alone_does_not_tell_the_classes_apart() -> None:
    """The mean colour of an image is drawn independently of its class: per class, it spans
    a wide range (textures, half one colour and half the other, a narrower one)."""
    images, labels = generate_shapes(500, seed=1)
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    for label in range(len(SHAPE_CLASSES)):
        brightness = means[labels == label].mean(axis=1)
        assert brightness.max() - brightness.min() > 60, SHAPE_CLASSES[label]


def test_the_dataset_catalogue_labels_them_by_name() -> None:
    images = get_image_dataset("shapes").load(30, 2)
    assert images.pixels.shape == (30, 3072)
    assert set(images.labels.tolist()) <= set(SHAPE_CLASSES)
    assert images.fmt.mode == "RGB"
    assert IMAGE_DATASETS["digits"].default_rows is None


def test_zero_images_and_unknown_datasets_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 1 image"):
        generate_shapes(0)
    with pytest.raises(InvalidInputError, match="known image datasets: digits, shapes"):
        get_image_dataset("cats")

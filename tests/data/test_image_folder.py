"""Image folders and digits as labelled pixel tables; the pixel sample an image profile keeps."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shipyard.data import TableSchema
from shipyard.data.images import (
    DIGITS_FORMAT,
    PROFILED_PIXELS,
    ImageFormat,
    LabelledImages,
    image_features,
    load_digits,
    open_image,
    profiled_schema,
    read_image_folder,
    write_image_folder,
)
from shipyard.errors import InvalidInputError, NotFoundError

SMALL = ImageFormat(width=4, height=4, mode="RGB")


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (6, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pictures"
    for name, colour in (("red", (200, 0, 0)), ("blue", (0, 0, 200))):
        (root / name).mkdir(parents=True)
        for index in range(3):
            (root / name / f"{index}.png").write_bytes(_png(colour))
    (root / "red" / ".DS_Store").write_bytes(b"\0\0")  # hidden files are skipped
    return root


def test_a_folder_per_class_becomes_what_serving_sends(folder: Path) -> None:
    images = read_image_folder(folder, SMALL)
    assert images.labels.tolist() == ["blue"] * 3 + ["red"] * 3
    assert images.pixels.shape == (6, 48)
    # Exactly the features a client's PNG becomes at the server: open_image, image_features.
    expected = image_features(open_image(_png((200, 0, 0))), SMALL)
    np.testing.assert_array_equal(images.pixels[3], expected)
    frame = images.frame("label")
    assert list(frame.columns) == [*SMALL.feature_names(), "label"]


def test_written_folders_read_back_as_the_same_images(tmp_path: Path) -> None:
    digits = load_digits()
    some = LabelledImages(digits.pixels[:20], digits.labels[:20], DIGITS_FORMAT)
    write_image_folder(some, tmp_path / "digits")
    read = read_image_folder(tmp_path / "digits", DIGITS_FORMAT)
    order = np.argsort(some.labels, kind="stable")
    # 0–16 values go through 8-bit PNG and back: within one step of 16/255.
    np.testing.assert_allclose(read.pixels, some.pixels[order], atol=16 / 255 / 2 + 1e-6)
    assert read.labels.tolist() == [str(label) for label in some.labels[order]]


def test_digits_are_scikit_learns_8_by_8_images() -> None:
    digits = load_digits()
    assert digits.pixels.shape == (1797, 64)
    assert float(digits.pixels.max()) == 16.0
    assert sorted(set(digits.labels.tolist())) == list(range(10))
    assert len(digits.digest()) == 64


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no image folder at"):
        read_image_folder(tmp_path / "nowhere", SMALL)


def test_fewer_than_two_class_folders_are_refused(folder: Path) -> None:
    for path in (folder / "blue").iterdir():
        path.unlink()
    (folder / "blue").rmdir()
    with pytest.raises(InvalidInputError, match=r"1 class folder\(s\) \(red\); .* at least 2"):
        read_image_folder(folder, SMALL)


def test_an_empty_class_folder_is_refused(folder: Path) -> None:
    (folder / "green").mkdir()
    with pytest.raises(InvalidInputError, match=r"class folder .*green holds no image"):
        read_image_folder(folder, SMALL)


def test_a_file_that_is_no_image_is_named(folder: Path) -> None:
    (folder / "red" / "notes.txt").write_text("not a picture")
    with pytest.raises(InvalidInputError, match=r"notes.txt: .*not a PNG or JPEG .*remove it"):
        read_image_folder(folder, SMALL)


def test_a_truncated_image_is_named(folder: Path) -> None:
    (folder / "blue" / "9.png").write_bytes(_png((1, 2, 3), (40, 40))[:60])
    with pytest.raises(InvalidInputError, match=r"9.png: .*cannot be decoded"):
        read_image_folder(folder, SMALL)


@pytest.mark.parametrize(
    "damage",
    [
        lambda png: png[:8],  # the signature alone
        lambda png: png[:8] + b"\x00\x00\x00\x0dIHDX" + png[16:],  # no IHDR chunk first
        lambda png: png[:20],  # IHDR cut short
        lambda png: png[:33] + b"\x00\x00\x00\x05IDAT" + b"\xff" * 9,  # pixels not zlib
        lambda png: b"\xff\xd8\xff\xe0" + b"\x00" * 40,  # a JPEG start and nothing else
    ],
    ids=["signature-only", "no-ihdr", "short-ihdr", "bad-idat", "empty-jpeg"],
)
def test_a_damaged_image_is_bad_input_not_a_crash(damage: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"cannot be decoded.*truncated or corrupt"):
        open_image(damage(_png((1, 2, 3), (40, 40))))


def test_an_image_profile_keeps_a_sample_of_the_pixels() -> None:
    fmt = ImageFormat(width=32, height=32, mode="RGB")
    columns = [{"name": name} for name in fmt.feature_names()]
    schema = TableSchema.model_validate(
        {"columns": [*columns, {"name": "label", "dtype": "string"}], "target": "label"}
    )
    kept = profiled_schema(schema)
    assert len(kept.feature_names) == PROFILED_PIXELS
    assert kept.feature_names[0] == "pixel_0"
    assert kept.feature_names[-1] == "pixel_3071"
    assert kept.target == "label"
    small = TableSchema.model_validate({"columns": [{"name": "pixel_0"}, {"name": "y"}]})
    assert profiled_schema(small) is small

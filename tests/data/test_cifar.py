"""The CIFAR-10 binary format: written and read back channel-last, and bad folders refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipyard.data.cifar import META_FILE, RECORD_BYTES, TEST_FILE, read_cifar, write_cifar
from shipyard.data.shapes import SHAPE_CLASSES, generate_shapes
from shipyard.errors import InvalidInputError, NotFoundError


@pytest.fixture
def cifar(tmp_path: Path) -> Path:
    images, labels = generate_shapes(60, seed=5)
    write_cifar(tmp_path / "cifar", images, labels, SHAPE_CLASSES)
    return tmp_path / "cifar"


def test_the_files_and_records_are_those_of_cifar_10(cifar: Path) -> None:
    names = sorted(path.name for path in cifar.iterdir())
    assert names == [META_FILE, *(f"data_batch_{n}.bin" for n in range(1, 6)), TEST_FILE]
    assert (cifar / TEST_FILE).stat().st_size == 10 * RECORD_BYTES  # one sixth
    assert (cifar / META_FILE).read_text().splitlines()[:2] == ["disc", "ring"]


def test_a_record_is_a_label_then_the_red_green_and_blue_planes(tmp_path: Path) -> None:
    """One hand-made record: the reader turns its planes (CHW) into channel-last pixels."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[0, 1] = (10, 20, 30)  # row 0, column 1
    record = bytearray(RECORD_BYTES)
    record[0] = 1
    record[1 + 1] = 10  # red plane, pixel 1
    record[1 + 1024 + 1] = 20
    record[1 + 2048 + 1] = 30
    (tmp_path / "data_batch_1.bin").write_bytes(bytes(record))
    (tmp_path / META_FILE).write_text("cat\ndog\n\n")
    read = read_cifar(tmp_path)
    assert read.labels.tolist() == ["dog"]
    np.testing.assert_array_equal(read.pixels[0], image.reshape(-1).astype(np.float32))
    assert read.pixels[0, 3:6].tolist() == [10, 20, 30]


def test_written_images_read_back_unchanged(cifar: Path) -> None:
    images, labels = generate_shapes(60, seed=5)
    read = read_cifar(cifar)
    np.testing.assert_array_equal(read.pixels, images.reshape(60, -1).astype(np.float32))
    assert read.labels.tolist() == [SHAPE_CLASSES[label] for label in labels]


def test_a_missing_folder_or_meta_file_says_what_is_expected(cifar: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no CIFAR-10 folder at .*shipyard data generate"):
        read_cifar(tmp_path / "nowhere")
    (cifar / META_FILE).unlink()
    with pytest.raises(NotFoundError, match=r"no batches.meta.txt in .*one per line"):
        read_cifar(cifar)


def test_a_folder_without_record_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_text("a\nb\n")
    with pytest.raises(NotFoundError, match=r"no record files in .*data_batch_1.bin"):
        read_cifar(tmp_path)


def test_a_record_of_the_wrong_length_is_refused(cifar: Path) -> None:
    path = cifar / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvalidInputError, match=r"data_batch_2.bin holds .*100 bytes short"):
        read_cifar(cifar)


def test_an_empty_record_file_is_refused(cifar: Path) -> None:
    (cifar / TEST_FILE).write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"test_batch.bin is empty"):
        read_cifar(cifar)


def test_a_label_beyond_the_class_names_is_refused(cifar: Path) -> None:
    (cifar / META_FILE).write_text("disc\nring\n")
    with pytest.raises(InvalidInputError, match=r"names only 2 classes"):
        read_cifar(cifar)


def test_only_32_by_32_rgb_images_are_written(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"32×32 RGB"):
        write_cifar(tmp_path, np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2, np.int64), ["a"])

"""The CIFAR-10 binary format: a folder of fixed-length records, read and written.

The "binary version" of CIFAR-10 is a folder with ``data_batch_1.bin`` … ``data_batch_5.bin``,
``test_batch.bin`` and ``batches.meta.txt`` (one class name per line). Each record is one
label byte (an index into the names) and 3,072 pixel bytes: the 1,024 red values of a
32×32 image row by row, then the green, then the blue plane (channel-first). Shipyard's
image contract is channel-last (``data/images.py``), so the reader transposes each record.
A user with the real files points a spec at the folder (``images: {cifar: DIR}``); the
``shapes`` generator writes the same format, so both go through this one reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from shipyard.data.images import ImageFormat, LabelledImages
from shipyard.errors import InvalidInputError, NotFoundError

CIFAR_FORMAT = ImageFormat(width=32, height=32, mode="RGB")
RECORD_BYTES = 1 + CIFAR_FORMAT.size
META_FILE = "batches.meta.txt"
TRAIN_FILES = tuple(f"data_batch_{n}.bin" for n in range(1, 6))
TEST_FILE = "test_batch.bin"


def write_cifar(
    folder: Path,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.integer],
    class_names: list[str] | tuple[str, ...],
) -> list[Path]:
    """Write (count, 32, 32, 3) images as a CIFAR-10 binary folder: one sixth of them (the
    last) in ``test_batch.bin``, the rest over the five training batches; the files written."""
    if images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
        raise InvalidInputError(
            f"CIFAR-10 records hold 32×32 RGB images with one label each, not images of "
            f"shape {images.shape[1:]} with {len(labels)} labels"
        )
    if len(class_names) > 256 or any(not name.strip() or "\n" in name for name in class_names):
        raise InvalidInputError("CIFAR-10 needs 1–256 class names, each one non-empty line")
    folder.mkdir(parents=True, exist_ok=True)
    # HWC → planes: all red values, then green, then blue, each row-major.
    planes = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)
    records = np.concatenate([labels.astype(np.uint8).reshape(-1, 1), planes], axis=1)
    test_count = len(records) // 6
    train, test = records[: len(records) - test_count], records[len(records) - test_count :]
    written = []
    for name, part in zip(TRAIN_FILES, np.array_split(train, len(TRAIN_FILES)), strict=True):
        (folder / name).write_bytes(part.tobytes())
        written.append(folder / name)
    (folder / TEST_FILE).write_bytes(test.tobytes())
    (folder / META_FILE).write_text("".join(f"{name}\n" for name in class_names) + "\n")
    return [*written, folder / TEST_FILE, folder / META_FILE]


def read_cifar(folder: Path) -> LabelledImages:
    """Every record of a CIFAR-10 binary folder (training batches, then the test batch) as
    channel-last pixels, labelled with the class names of ``batches.meta.txt``."""
    if not folder.is_dir():
        raise NotFoundError(
            f"no CIFAR-10 folder at {folder.absolute()}; give the folder holding "
            f"{TRAIN_FILES[0]} … {TEST_FILE} and {META_FILE} (`shipyard data generate "
            "shapes -o DIR` writes a generated stand-in)"
        )
    meta = folder / META_FILE
    if not meta.is_file():
        raise NotFoundError(
            f"no {META_FILE} in {folder}: the CIFAR-10 binary folder names its classes there, "
            "one per line"
        )
    names = [line.strip() for line in meta.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    files = [folder / name for name in (*TRAIN_FILES, TEST_FILE) if (folder / name).is_file()]
    if not files:
        raise NotFoundError(
            f"no record files in {folder}: expected {', '.join(TRAIN_FILES)} and {TEST_FILE}"
        )
    parts = [_records(path) for path in files]
    records = np.concatenate(parts) if len(parts) > 1 else parts[0]
    labels = records[:, 0].astype(np.int64)
    if len(records) and int(labels.max()) >= len(names):
        raise InvalidInputError(
            f"a record in {folder} has label {int(labels.max())} but {META_FILE} names only "
            f"{len(names)} classes; add the missing class names"
        )
    planes = records[:, 1:].reshape(-1, 3, 32, 32)
    pixels = planes.transpose(0, 2, 3, 1).reshape(len(records), -1).astype(np.float32)
    named = np.asarray(names, dtype=object)[labels]
    return LabelledImages(pixels=pixels, labels=named, fmt=CIFAR_FORMAT)


def _records(path: Path) -> npt.NDArray[np.uint8]:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise InvalidInputError(f"{path} is empty; a CIFAR-10 record file holds records")
    if data.size % RECORD_BYTES:
        whole, extra = divmod(data.size, RECORD_BYTES)
        raise InvalidInputError(
            f"{path} holds {data.size:,} bytes, not a whole number of {RECORD_BYTES:,}-byte "
            f"CIFAR-10 records ({whole:,} records, then a record {RECORD_BYTES - extra:,} "
            "bytes short): the file is truncated or not in the binary format (1 label byte "
            "+ 3,072 pixel bytes per record)"
        )
    return data.reshape(-1, RECORD_BYTES)

"""The ``data.images`` section of a pipeline spec: labelled images as a pipeline's table.

A built-in set (``dataset``: digits, generated shapes), a CIFAR-10 binary folder (``cifar``)
or a folder with one sub-folder of PNG/JPEG files per class (``folder``); the table it loads
has the pixel columns of the images' format (``data/images.py``) and the label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shipyard.data import IMAGE_DATASETS, Column, ImageFormat, LabelledImages
from shipyard.data.cifar import CIFAR_FORMAT, read_cifar
from shipyard.data.images import read_image_folder


def _known_image_dataset(name: str | None) -> str | None:
    if name is not None and name not in IMAGE_DATASETS:
        raise ValueError(
            f"unknown image dataset {name!r}; known image datasets: {', '.join(IMAGE_DATASETS)}"
        )
    return name


class ImagesSpec(BaseModel):
    """Labelled images as a pipeline's data: a built-in set (``dataset``), a CIFAR-10 binary
    folder (``cifar``) or a folder with one sub-folder of PNG/JPEG files per class
    (``folder``, whose images are scaled to ``width`` × ``height`` in ``mode``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Annotated[str | None, AfterValidator(_known_image_dataset)] = None
    rows: int | None = Field(default=None, gt=0)
    """Images a generated dataset makes (default: its own number)."""
    seed: int = 0
    cifar: Path | None = None
    folder: Path | None = None
    width: int | None = Field(default=None, ge=1, le=4096)
    height: int | None = Field(default=None, ge=1, le=4096)
    mode: Literal["L", "RGB"] = "RGB"
    max_value: float = Field(default=255.0, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [name for name in ("dataset", "cifar", "folder") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one of `dataset` (" + ", ".join(IMAGE_DATASETS) + "), `cifar` "
                "(a CIFAR-10 binary folder) or `folder` (one sub-folder of images per class)"
            )
        described = {"width", "height", "mode", "max_value"} & self.model_fields_set
        if self.folder is None and described:
            raise ValueError(
                f"{', '.join(sorted(described))}: only an image `folder` is given a format; "
                "a dataset and CIFAR-10 files have their own"
            )
        if self.folder is not None and (self.width is None or self.height is None):
            raise ValueError(
                "an image folder needs the size its images are scaled to: `width` and "
                "`height` (and `mode`: L or RGB, default RGB)"
            )
        generated = self.dataset is not None and IMAGE_DATASETS[self.dataset].default_rows
        if not generated and {"rows", "seed"} & self.model_fields_set:
            raise ValueError(
                "`rows` and `seed` are for a generated image dataset ("
                + ", ".join(n for n, d in IMAGE_DATASETS.items() if d.default_rows)
                + "); the others have a fixed set of images"
            )
        return self

    def image_format(self) -> ImageFormat:
        """The format the model consumes and its manifest records."""
        if self.dataset is not None:
            return IMAGE_DATASETS[self.dataset].fmt
        if self.cifar is not None:
            return CIFAR_FORMAT
        assert self.width is not None
        assert self.height is not None
        return ImageFormat(
            width=self.width, height=self.height, mode=self.mode, max_value=self.max_value
        )

    def columns(self, target: str) -> list[Column]:
        """The table's columns: the pixels, then the label (0–9 for digits, else names)."""
        label = "int64" if self.dataset == "digits" else "string"
        pixels = [Column(name=name) for name in self.image_format().feature_names()]
        return [*pixels, Column(name=target, dtype=label)]

    def load(self) -> LabelledImages:
        """Generate or read the images."""
        if self.dataset is not None:
            return IMAGE_DATASETS[self.dataset].load(self.rows, self.seed)
        if self.cifar is not None:
            return read_cifar(self.cifar)
        assert self.folder is not None
        return read_image_folder(self.folder, self.image_format())

    def relative_to(self, folder: Path) -> ImagesSpec:
        """The same images with a relative ``cifar`` or ``folder`` taken from ``folder``."""
        update = {
            name: folder / path
            for name in ("cifar", "folder")
            if (path := getattr(self, name)) is not None and not path.is_absolute()
        }
        return self.model_copy(update=update) if update else self

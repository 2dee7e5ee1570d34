"""Turning request payloads into the float32 feature matrix a model version expects.

Every way a client can send rows (a matrix, records keyed by feature name, columns plus
rows) ends here, with errors that say what was wrong and what the model expects.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL.Image import Image

from shipyard.data.images import ImageFormat, image_features
from shipyard.errors import InvalidInputError, SchemaError
from shipyard.inference.predictor import Features

FLOAT32_MAX = float(np.finfo(np.float32).max)
OUT_OF_RANGE = f"beyond the float32 range (±{FLOAT32_MAX:.4g}) the model computes in"
PlainNumber = Annotated[float, msgspec.Meta(ge=-(2**53), le=2**53)]
"""A number a typed decoder reads as it is (the server's typed passes): within ±2**53,
where float64 holds every integer, it becomes the float32 ``to_float32`` makes of it too
(which turns a list of integers into float32 from int64: a larger integer would be rounded
twice, and might land on another float32); other values go the general way."""
MAX_COLUMN_ORDERS = 64
"""Lists of columns whose order a layout remembers (``from_columns``)."""
_NUMBER_TYPES = frozenset({int, float, type(None)})


@dataclass(frozen=True)
class CheckedRecords:
    """Records checked one by one: the matrix of the good ones, and why the others are bad."""

    features: Features
    kept: list[int]
    """Positions (in the records given) of the rows of ``features``."""
    reasons: dict[int, str]
    """Position of each refused record → what is wrong with it."""


class FeatureLayout:
    """A model version's input: feature names in order and which may be missing (NaN)."""

    def __init__(self, input_schema: Mapping[str, Any]) -> None:
        self.names: list[str] = list(input_schema["features"])
        self.image = ImageFormat.of_schema(dict(input_schema))
        """The image format of an image model (its features are pixels), else None."""
        # Where each feature is among the image's pixels, worked out once: naming 3,072
        # pixels costs more than classifying the image.
        self._pixel_order: list[int] | None = None
        self._pixel_problem: str | None = None
        if self.image is not None:
            pixel_names = self.image.feature_names()
            if self.names != pixel_names:
                position = {name: i for i, name in enumerate(pixel_names)}
                if all(name in position for name in self.names):
                    self._pixel_order = [position[name] for name in self.names]
                else:
                    self._pixel_problem = (
                        f"the model's features ({_preview(self.names)}) are not the pixels of "
                        f"its {self.image.width}×{self.image.height} {self.image.mode} image"
                    )
        self.index = {name: i for i, name in enumerate(self.names)}
        self._orders: dict[tuple[str, ...], list[int] | None] = {}
        """Each list of columns seen (up to ``MAX_COLUMN_ORDERS``) → ``_column_order``."""
        columns = {c["name"]: c for c in input_schema.get("columns", [])}
        self.nullable = np.array(
            [bool(columns.get(name, {}).get("nullable", False)) for name in self.names]
        )
        # The features of a record in order, as a tuple (itemgetter: the fastest way).
        getter = itemgetter(*self.names)
        self._take: Callable[[Mapping[str, Any]], Sequence[Any]] = (
            getter if len(self.names) > 1 else lambda record: (getter(record),)
        )

    @property
    def width(self) -> int:
        """Number of features."""
        return len(self.names)

    def check(self, features: Features, *, finite: bool = False) -> Features:
        """Shape and missing values; returns the matrix as C-contiguous float32.

        ``finite``: the caller knows every value is a number (decoded from JSON, which has
        no NaN, by a typed pass), so there is no missing value to look for."""
        if features.ndim == 1 and features.size == self.width:
            features = features.reshape(1, -1)
        if features.ndim in (1, 2) and len(features) == 0:
            raise InvalidInputError("no rows to predict; send at least one")
        if features.ndim != 2 or features.shape[1] != self.width:
            raise InvalidInputError(
                f"expected shape [rows, {self.width}] ({self.width} features: "
                f"{_preview(self.names)}), got {list(features.shape)}"
            )
        if features.dtype != np.float32 or not features.flags.c_contiguous:
            try:
                with np.errstate(over="raise"):
                    features = np.ascontiguousarray(features, dtype=np.float32)
            except FloatingPointError as error:
                raise InvalidInputError(f"a value is {OUT_OF_RANGE}") from error
        # One pass over the values in the common case of none missing, a second only to
        # say which feature of which row is.
        if finite or not np.isnan(features).any():
            return features
        missing = np.isnan(features) & ~self.nullable
        if missing.any():
            row, col = (int(i) for i in np.argwhere(missing)[0])
            raise InvalidInputError(
                f"feature {self.names[col]!r} is missing (NaN or null) in row {row}; "
                "the model's schema requires a value"
            )
        return features

    def from_matrix(self, rows: Any) -> Features:
        """A list of rows (or one row) of numbers in feature order."""
        return self.check(to_float32(rows, "inputs"))

    def from_records(self, records: Sequence[Any]) -> Features:
        """A list of ``{feature: value}`` objects."""
        if not isinstance(records, list) or not records:
            raise InvalidInputError("expected a non-empty list of {feature: value} objects")
        matrix = np.empty((len(records), self.width), dtype=np.float32)
        for row, record in enumerate(records):
            if not isinstance(record, dict):
                raise InvalidInputError(f"row {row} is not an object of feature: value")
            self._check_names(record.keys(), row)
            try:
                matrix[row] = [_number(record[name]) for name in self.names]
            except (TypeError, ValueError, OverflowError) as error:
                raise _bad_value(record, self.names, row) from error
        return self.check(matrix)

    def from_images(self, images: Sequence[Image]) -> Features:
        """Decoded images as the pixel rows of an image model (``SchemaError``, 422, for a
        model that is not one)."""
        if self.image is None:
            raise SchemaError(
                "the model is not an image model (its manifest records no image format); "
                "send it its features instead"
            )
        if self._pixel_problem is not None:
            raise SchemaError(self._pixel_problem)
        if not images:
            raise InvalidInputError("no image to classify; send at least one")
        fmt = self.image
        if len(images) == 1:
            pixels = image_features(images[0], fmt).reshape(1, -1)
        else:
            pixels = np.stack([image_features(image, fmt) for image in images])
        if self._pixel_order is not None:  # a model that orders its pixels otherwise
            pixels = pixels[:, self._pixel_order]
        # Pixels are finite float32 numbers from 0 to max_value: nothing for ``check`` to find.
        return np.ascontiguousarray(pixels, dtype=np.float32)

    def check_records(self, records: Sequence[Any]) -> CheckedRecords:
        """``{feature: value}`` objects checked each on its own, so one bad record refuses
        only itself; fields that are not features are ignored (a stream message carries
        its ``id`` and whatever else its producer adds)."""
        rows: list[Sequence[Any]] = []
        kept: list[int] = []
        reasons: dict[int, str] = {}
        names = self.names
        take = self._take
        for position, record in enumerate(records):
            if not isinstance(record, dict):
                reasons[position] = "not an object of feature: value"
                continue
            try:
                row = take(record)
            except KeyError:
                missing = [n for n in names if n not in record]
                reasons[position] = f"missing feature(s): {_preview(missing)}"
                continue
            if not set(map(type, row)) <= _NUMBER_TYPES:
                reasons[position] = str(_bad_value(record, names, 0)).replace(" in row 0", "")
                continue
            rows.append(row)
            kept.append(position)
        return self.check_rows(rows, kept, reasons)

    def check_rows(
        self,
        rows: Sequence[Sequence[float | None]],
        kept: list[int],
        reasons: dict[int, str] | None = None,
    ) -> CheckedRecords:
        """Rows of numbers (or ``None``) in feature order, at positions ``kept`` of a batch,
        checked each on its own: values beyond float32 and nulls the schema forbids refuse
        their row. ``reasons`` (of rows refused before) is extended."""
        reasons = {} if reasons is None else reasons
        if not rows:
            return CheckedRecords(np.empty((0, self.width), np.float32), [], reasons)
        try:
            matrix = np.array(rows, dtype=np.float64)
        except OverflowError:  # an integer beyond any float: find its row
            fits = [i for i, row in enumerate(rows) if _fits_float64(row)]
            for i in sorted(set(range(len(rows))) - set(fits)):
                reasons[kept[i]] = f"a value is {OUT_OF_RANGE}"
            rows, kept = [rows[i] for i in fits], [kept[i] for i in fits]
            matrix = np.array(rows, dtype=np.float64).reshape(len(rows), self.width)
        too_big = (np.abs(matrix) > FLOAT32_MAX) & np.isfinite(matrix)
        missing = np.isnan(matrix) & ~self.nullable
        bad = too_big.any(axis=1) | missing.any(axis=1)
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                if too_big[i].any():
                    name = self.names[int(np.flatnonzero(too_big[i])[0])]
                    reasons[kept[i]] = f"feature {name!r} is {OUT_OF_RANGE}"
                else:
                    name = self.names[int(np.flatnonzero(missing[i])[0])]
                    reasons[kept[i]] = (
                        f"feature {name!r} is null; the model's schema requires a value"
                    )
            matrix = matrix[~bad]
            kept = [k for k, b in zip(kept, bad.tolist(), strict=True) if not b]
        return CheckedRecords(np.ascontiguousarray(matrix, dtype=np.float32), kept, reasons)

    def from_columns(self, columns: Any, rows: Any, *, finite: bool = False) -> Features:
        """Column names plus rows in that column order (``dataframe_split``); ``finite`` as
        for ``check``."""
        order = self._column_order(columns)
        matrix = to_float32(rows, "data")
        if matrix.ndim != 2 or matrix.shape[1] != len(columns):
            raise InvalidInputError(
                f"`data` must be rows of {len(columns)} values (one per column), "
                f"got shape {list(matrix.shape)}"
            )
        return self.check(matrix if order is None else matrix[:, order], finite=finite)

    def _column_order(self, columns: Any) -> list[int] | None:
        """Where each feature is among ``columns`` (``None``: they are the features in
        order), worked out once per list of columns (clients send the same one again)."""
        key = tuple(columns) if isinstance(columns, list) else ()
        try:
            if key in self._orders:
                return self._orders[key]
        except TypeError:  # an unhashable column: refused below
            pass
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise InvalidInputError("`columns` must be a list of feature names")
        self._check_names(columns, None)
        duplicated = sorted(name for name, count in Counter(columns).items() if count > 1)
        if duplicated:
            raise InvalidInputError(f"`columns` names {_preview(duplicated)} more than once")
        position = {name: i for i, name in enumerate(columns)}
        order = None if columns == self.names else [position[name] for name in self.names]
        if len(self._orders) < MAX_COLUMN_ORDERS:
            self._orders[key] = order
        return order

    def from_named(
        self, inputs: Mapping[str, Any], input_name: str, *, finite: bool = False
    ) -> Features:
        """Open Inference Protocol inputs: one matrix named ``input_name``, or one per
        feature; ``finite`` as for ``check``."""
        if input_name in inputs:
            if len(inputs) > 1:
                extra = sorted(set(inputs) - {input_name})
                raise InvalidInputError(
                    f"unexpected input(s) {', '.join(extra)} next to {input_name!r}"
                )
            return self.check(to_float32(inputs[input_name], input_name), finite=finite)
        if set(inputs) == set(self.names):
            columns = [_feature_column(to_float32(inputs[n], n), n) for n in self.names]
            if len({len(c) for c in columns}) != 1:
                raise InvalidInputError("per-feature inputs must all have the same number of rows")
            return self.check(np.column_stack(columns), finite=finite)
        raise InvalidInputError(
            f"expected input {input_name!r} of shape [rows, {self.width}] FP32, or one input per "
            f"feature ({_preview(self.names)}); got {_preview(sorted(inputs))}"
        )

    def _check_names(self, given: Any, row: int | None) -> None:
        names = set(given)
        where = f" in row {row}" if row is not None else ""
        unknown = sorted(names - self.index.keys())
        if unknown:
            raise InvalidInputError(
                f"unknown feature(s){where}: {_preview(unknown)}; "
                f"the model expects {_preview(self.names)}"
            )
        missing = [n for n in self.names if n not in names]
        if missing:
            raise InvalidInputError(f"missing feature(s){where}: {_preview(missing)}")


def to_float32(data: Any, what: str) -> Features:
    """Nested lists of numbers (null allowed, becomes NaN) as a float32 array; text refused.

    Numbers beyond the float32 range are refused too, rather than silently becoming infinity.
    """
    if isinstance(data, np.ndarray) and data.dtype == np.float32:
        return data  # already what it is turned into (a binary FP32 tensor, a typed decode)
    try:
        array = np.asarray(data)
        if array.dtype.kind == "O":
            # Ragged rows, or nulls mixed with numbers: only the latter is acceptable.
            flat = array.ravel()
            if not all(v is None or _is_number(v) for v in flat):
                raise ValueError("not all values are numbers")
            array = np.asarray(np.where(flat == None, np.nan, flat), dtype=np.float64)  # noqa: E711
            array = array.reshape(np.shape(data))
        elif array.dtype.kind not in "fiub":
            raise ValueError(f"values of type {array.dtype.kind!r} (text?)")
        with np.errstate(over="raise"):
            return array.astype(np.float32, copy=False)
    except (OverflowError, FloatingPointError) as error:
        raise InvalidInputError(f"`{what}` holds a value {OUT_OF_RANGE}") from error
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"`{what}` must hold only numbers, in rows of equal length ({error})"
        ) from error


def _number(value: Any) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    number = float(value)  # OverflowError for integers beyond any float
    if math.isfinite(number) and abs(number) > FLOAT32_MAX:
        raise OverflowError(value)
    return number


def _bad_value(record: Mapping[str, Any], names: Sequence[str], row: int) -> InvalidInputError:
    """The error naming the first value of a record that is not a float32 number."""
    for name in names:
        value = record[name]
        try:
            _number(value)
        except OverflowError:
            return InvalidInputError(f"feature {name!r} in row {row} is {OUT_OF_RANGE}")
        except (TypeError, ValueError):
            shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:60]}…"
            return InvalidInputError(f"feature {name!r} in row {row} must be a number, got {shown}")
    return InvalidInputError(f"row {row} holds a value that is not a number")


def _fits_float64(row: Sequence[Any]) -> bool:
    try:
        np.array(row, dtype=np.float64)
    except OverflowError:
        return False
    return True


def _feature_column(values: Features, name: str) -> Features:
    """One per-feature input as a column: shape [rows] or [rows, 1]."""
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
        return values.reshape(-1)
    raise InvalidInputError(
        f"per-feature input {name!r} must have shape [rows] or [rows, 1], got {list(values.shape)}"
    )


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")

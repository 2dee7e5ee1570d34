"""Table schemas: which columns a table has, their dtypes, and which one is the target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shipyard.errors import SchemaError

DType = Literal["float64", "int64", "bool", "string"]

# Beyond this many names a "missing column" message lists the first few and counts the rest.
_LISTED_COLUMNS = 8


class Column(BaseModel):
    """One column of a table: its name, dtype and whether it may hold missing values."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    dtype: DType = "float64"
    nullable: bool = False


class TableSchema(BaseModel):
    """The columns of a table, in order, and the name of the target column if any."""

    model_config = ConfigDict(frozen=True)

    columns: list[Column] = Field(min_length=1)
    target: str | None = None

    @model_validator(mode="after")
    def _check_names(self) -> TableSchema:
        names = [column.name for column in self.columns]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"column names must be unique; repeated: {', '.join(duplicates)}")
        if self.target is not None and self.target not in names:
            raise ValueError(
                f"target {self.target!r} is not one of the columns ({_list_names(names)})"
            )
        return self

    @property
    def names(self) -> list[str]:
        """Every column name, in schema order."""
        return [column.name for column in self.columns]

    @property
    def feature_names(self) -> list[str]:
        """Column names in schema order, without the target."""
        return [column.name for column in self.features]

    @property
    def features(self) -> list[Column]:
        """Columns in schema order, without the target."""
        return [column for column in self.columns if column.name != self.target]

    def column(self, name: str) -> Column:
        """The column called ``name``; ``SchemaError`` if there is none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise SchemaError(f"no column {name!r} in the schema ({_list_names(self.names)})")

    def validate_frame(self, frame: pd.DataFrame, *, require_target: bool = True) -> pd.DataFrame:
        """A new frame with the schema's columns, in order, cast to their dtypes.

        Extra columns are dropped. The target is kept when present; when it is absent and not
        ``require_target``, the result has the features only. Row numbers in error messages
        count from 0, as ``frame.iloc`` does. A nullable ``int64`` or ``bool`` column that holds
        missing values comes back as pandas' ``Int64`` or ``boolean``. The input is not modified.
        """
        present = set(frame.columns)
        expected = self.columns
        if self.target is not None and self.target not in present and not require_target:
            expected = self.features
        missing = [column.name for column in expected if column.name not in present]
        if missing:
            noun = "column" if len(missing) == 1 else "columns"
            quoted = ", ".join(repr(name) for name in missing)
            raise SchemaError(
                f"missing {noun} {quoted} (expected {len(self.columns)} columns: "
                f"{_list_names(self.names)}); check the file has a header row and the "
                "column names match the schema"
            )
        if frame.columns.has_duplicates:
            frame = frame.loc[:, ~frame.columns.duplicated()]
        result = {column.name: _convert(column, frame[column.name]) for column in expected}
        return pd.DataFrame(result, index=frame.index)


def _list_names(names: list[str]) -> str:
    if len(names) <= _LISTED_COLUMNS:
        return ", ".join(names)
    return ", ".join(names[:_LISTED_COLUMNS]) + f", … ({len(names) - _LISTED_COLUMNS} more)"


def _convert(column: Column, series: pd.Series[Any]) -> pd.Series[Any]:
    missing = series.isna()
    if not column.nullable:
        count = int(missing.sum())
        if count:
            first = int(np.flatnonzero(missing.to_numpy())[0])
            noun = "value" if count == 1 else "values"
            raise SchemaError(
                f"column {column.name!r} has {count} missing {noun} (first at row {first}); "
                "fill or drop them, or declare the column nullable"
            )
    return _CONVERTERS[column.dtype](column, series, missing)


def _type_error(
    column: Column, series: pd.Series[Any], bad: np.ndarray[Any, Any] | pd.Series[bool], kind: str
) -> SchemaError:
    """A SchemaError naming the first row where ``bad`` is true."""
    row = int(np.flatnonzero(np.asarray(bad))[0])
    value = series.iloc[row]
    if isinstance(value, np.generic):
        value = value.item()
    return SchemaError(
        f"column {column.name!r} must be {column.dtype} but has {kind} "
        f"(dtype {series.dtype}): {value!r} at row {row}"
    )


def _kind_of(value: object) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool | np.bool_):
        return "a boolean"
    if isinstance(value, int | float | np.number):
        return "a number"
    return f"a {type(value).__name__}"


def _as_numbers(column: Column, series: pd.Series[Any], missing: pd.Series[bool]) -> pd.Series[Any]:
    """The series as float64, or SchemaError at the first value that is not a number."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.astype("float64")
    if not (pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series)):
        if missing.all():
            return pd.Series(np.nan, index=series.index, dtype="float64")
        raise _type_error(column, series, ~missing.to_numpy(), f"{series.dtype} values")
    # Text that spells a number ("1.5") is accepted: quoted numbers are common in exports.
    numbers = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = numbers.isna().to_numpy() & ~missing.to_numpy()
    if bad.any():
        first = series.iloc[int(np.flatnonzero(bad)[0])]
        raise _type_error(column, series, bad, _kind_of(first))
    return numbers


def _to_float(column: Column, series: pd.Series[Any], missing: pd.Series[bool]) -> pd.Series[Any]:
    return _as_numbers(column, series, missing)


def _to_int(column: Column, series: pd.Series[Any], missing: pd.Series[bool]) -> pd.Series[Any]:
    if pd.api.types.is_integer_dtype(series.dtype) and not missing.any():
        return series.astype("int64")
    numbers = _as_numbers(column, series, missing)
    values = numbers.to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~missing.to_numpy() & ((values != np.floor(values)) | (np.abs(values) >= 2.0**63))
    if bad.any():
        raise _type_error(column, series, bad, "a non-integer value")
    if missing.any():
        return numbers.astype("Int64")
    return numbers.astype("int64")


def _to_bool(column: Column, series: pd.Series[Any], missing: pd.Series[bool]) -> pd.Series[Any]:
    if pd.api.types.is_bool_dtype(series.dtype) and not missing.any():
        return series.astype("bool")
    numbers = _as_numbers(column, series, missing)
    bad = ~missing.to_numpy() & ~numbers.isin([0.0, 1.0]).to_numpy()
    if bad.any():
        raise _type_error(column, series, bad, "a value other than true/false or 0/1")
    if missing.any():
        return numbers.astype("boolean")
    return numbers.astype("bool")


def _to_string(column: Column, series: pd.Series[Any], missing: pd.Series[bool]) -> pd.Series[Any]:
    if pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype):
        return series.astype("str")
    if missing.all():
        return pd.Series(np.nan, index=series.index, dtype="str")
    # A numeric column where text is expected usually means the wrong file or column order.
    raise _type_error(column, series, ~missing.to_numpy(), f"{series.dtype} values")


_CONVERTERS: dict[str, Callable[[Column, pd.Series[Any], pd.Series[bool]], pd.Series[Any]]] = {
    "float64": _to_float,
    "int64": _to_int,
    "bool": _to_bool,
    "string": _to_string,
}

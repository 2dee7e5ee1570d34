from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from shipyard.data import FRAUD_SCHEMA, Column, TableSchema
from shipyard.errors import SchemaError

SCHEMA = TableSchema(
    columns=[
        Column(name="amount"),
        Column(name="count", dtype="int64"),
        Column(name="flag", dtype="bool"),
        Column(name="city", dtype="string"),
        Column(name="note", dtype="string", nullable=True),
        Column(name="label", dtype="int64"),
    ],
    target="label",
)


def good_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "extra": [9, 9, 9],
            "label": [0, 1, 0],
            "amount": [1, 2, 3],
            "count": [1.0, 2.0, 3.0],
            "flag": [0, 1, 1],
            "city": ["a", "b", "c"],
            "note": ["x", None, "z"],
        }
    )


def test_target_must_name_a_column() -> None:
    with pytest.raises(ValidationError, match="target 'nope' is not one of the columns"):
        TableSchema(columns=[Column(name="a")], target="nope")


def test_column_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="repeated: a"):
        TableSchema(columns=[Column(name="a"), Column(name="a")])


def test_schema_is_frozen() -> None:
    with pytest.raises(ValidationError):
        SCHEMA.target = "amount"  # type: ignore[misc]


def test_feature_names_leave_out_the_target() -> None:
    assert SCHEMA.feature_names == ["amount", "count", "flag", "city", "note"]
    assert [column.name for column in SCHEMA.features] == SCHEMA.feature_names
    assert FRAUD_SCHEMA.feature_names == ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"]


def test_column_lookup() -> None:
    assert SCHEMA.column("count").dtype == "int64"
    with pytest.raises(SchemaError, match="no column 'nope'"):
        SCHEMA.column("nope")


def test_validate_casts_orders_and_drops_extra_columns() -> None:
    frame = good_frame()
    before = frame.copy()
    result = SCHEMA.validate_frame(frame)
    assert list(result.columns) == ["amount", "count", "flag", "city", "note", "label"]
    assert result["amount"].dtype == np.float64
    assert result["count"].dtype == np.int64
    assert result["flag"].dtype == np.bool_
    assert result["flag"].tolist() == [False, True, True]
    assert result["label"].dtype == np.int64
    assert pd.api.types.is_string_dtype(result["city"].dtype)
    assert result["note"].isna().tolist() == [False, True, False]
    pd.testing.assert_frame_equal(frame, before)


def test_validate_without_target_returns_features_only() -> None:
    result = SCHEMA.validate_frame(good_frame().drop(columns="label"), require_target=False)
    assert list(result.columns) == SCHEMA.feature_names


def test_validate_keeps_a_present_target_when_not_required() -> None:
    result = SCHEMA.validate_frame(good_frame(), require_target=False)
    assert list(result.columns) == [column.name for column in SCHEMA.columns]


def test_missing_target_when_required() -> None:
    with pytest.raises(SchemaError, match="missing column 'label'"):
        SCHEMA.validate_frame(good_frame().drop(columns="label"))


def test_missing_column_message_names_it_and_says_what_to_do() -> None:
    frame = pd.DataFrame(np.zeros((3, 31)), columns=FRAUD_SCHEMA.names).drop(columns="V7")
    with pytest.raises(SchemaError) as caught:
        FRAUD_SCHEMA.validate_frame(frame)
    message = str(caught.value)
    assert "missing column 'V7'" in message
    assert "expected 31 columns: Time, V1," in message
    assert "header row" in message


def test_several_missing_columns_are_all_named() -> None:
    with pytest.raises(SchemaError, match="missing columns 'count', 'flag'"):
        SCHEMA.validate_frame(good_frame().drop(columns=["count", "flag"]))


def test_text_in_a_float_column_names_value_and_row() -> None:
    frame = good_frame().astype({"amount": object})
    frame.loc[2, "amount"] = "abc"
    with pytest.raises(SchemaError) as caught:
        SCHEMA.validate_frame(frame)
    message = str(caught.value)
    assert "column 'amount' must be float64 but has text" in message
    assert "(dtype object)" in message
    assert "'abc' at row 2" in message


def test_text_read_from_csv_is_reported_at_its_row() -> None:
    amounts = [str(value) for value in range(30)]
    amounts[17] = "abc"
    frame = good_frame().iloc[[0] * 30].reset_index(drop=True).assign(amount=amounts)
    with pytest.raises(SchemaError, match=r"must be float64 but has text .*'abc' at row 17"):
        SCHEMA.validate_frame(frame)


def test_numeric_text_is_accepted_as_float() -> None:
    frame = good_frame().assign(amount=["1.5", "2", "3e2"])
    assert SCHEMA.validate_frame(frame)["amount"].tolist() == [1.5, 2.0, 300.0]


def test_non_integer_in_an_int_column() -> None:
    frame = good_frame().assign(count=[1.0, 2.5, 3.0])
    with pytest.raises(SchemaError, match=r"'count' must be int64 .*non-integer.*2\.5 at row 1"):
        SCHEMA.validate_frame(frame)


def test_bool_column_rejects_values_other_than_0_and_1() -> None:
    frame = good_frame().assign(flag=[0, 2, 1])
    with pytest.raises(SchemaError, match=r"'flag' must be bool .*\(dtype int64\): 2 at row 1"):
        SCHEMA.validate_frame(frame)


def test_bool_column_accepts_booleans() -> None:
    frame = good_frame().assign(flag=[True, False, True])
    assert SCHEMA.validate_frame(frame)["flag"].tolist() == [True, False, True]


def test_string_column_rejects_numbers() -> None:
    frame = good_frame().assign(city=[1.0, 2.0, 3.0])
    with pytest.raises(SchemaError, match=r"'city' must be string .*float64.*: 1\.0 at row 0"):
        SCHEMA.validate_frame(frame)


def test_nulls_in_a_non_nullable_column() -> None:
    frame = good_frame().assign(amount=[1.0, np.nan, np.nan])
    with pytest.raises(SchemaError) as caught:
        SCHEMA.validate_frame(frame)
    message = str(caught.value)
    assert "column 'amount' has 2 missing values (first at row 1)" in message
    assert "nullable" in message


def test_nullable_int_with_nulls_becomes_pandas_int64() -> None:
    schema = TableSchema(columns=[Column(name="n", dtype="int64", nullable=True)])
    result = schema.validate_frame(pd.DataFrame({"n": [1.0, None]}))
    assert str(result["n"].dtype) == "Int64"
    assert result["n"].isna().tolist() == [False, True]


def test_nullable_extension_types_cast() -> None:
    frame = good_frame().assign(amount=pd.array([1, 2, 3], dtype="Int64"))
    assert SCHEMA.validate_frame(frame)["amount"].dtype == np.float64


def test_validate_keeps_the_index() -> None:
    frame = good_frame().set_axis([10, 20, 30])
    assert SCHEMA.validate_frame(frame).index.tolist() == [10, 20, 30]


def test_validate_handles_a_million_rows() -> None:
    frame = pd.DataFrame(np.zeros((1_000_000, 31)), columns=FRAUD_SCHEMA.names)
    result = FRAUD_SCHEMA.validate_frame(frame)
    assert result.shape == (1_000_000, 31)
    assert result["Class"].dtype == np.int64

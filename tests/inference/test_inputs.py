"""FeatureLayout and to_float32: every way rows arrive, and every way they can be wrong."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from shipyard.errors import InvalidInputError
from shipyard.inference.inputs import MAX_COLUMN_ORDERS, FeatureLayout, to_float32

NAMES = ["a", "b", "c"]


@pytest.fixture
def layout() -> FeatureLayout:
    """Three features; only ``b`` may be missing."""
    return FeatureLayout(
        {
            "features": NAMES,
            "columns": [
                {"name": "a", "nullable": False},
                {"name": "b", "nullable": True},
                {"name": "c"},
            ],
        }
    )


def test_width_names_and_nullable(layout: FeatureLayout) -> None:
    assert layout.width == 3
    assert layout.names == NAMES
    assert layout.nullable.tolist() == [False, True, False]
    assert not FeatureLayout({"features": NAMES}).nullable.any()


# -- check and matrices ---------------------------------------------------------------------


def test_matrix_becomes_contiguous_float32(layout: FeatureLayout) -> None:
    features = layout.from_matrix([[1, 2, 3], [4.5, 5, 6]])
    assert features.dtype == np.float32
    assert features.flags.c_contiguous
    np.testing.assert_array_equal(features, [[1, 2, 3], [4.5, 5, 6]])


def test_one_row_without_the_outer_list_is_accepted(layout: FeatureLayout) -> None:
    np.testing.assert_array_equal(layout.from_matrix([1, 2, 3]), [[1, 2, 3]])


def test_check_accepts_float64_and_fortran_order(layout: FeatureLayout) -> None:
    features = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    checked = layout.check(features)  # type: ignore[arg-type]  # callers may pass float64
    assert checked.dtype == np.float32
    assert checked.flags.c_contiguous
    np.testing.assert_array_equal(checked, features)


@pytest.mark.parametrize(
    "rows",
    [[[1, 2]], [[1, 2, 3, 4]], [1, 2], [[[1, 2, 3]]]],
    ids=["too-narrow", "too-wide", "short-row", "three-dims"],
)
def test_wrong_width_names_the_expected_shape_and_features(
    layout: FeatureLayout, rows: Any
) -> None:
    with pytest.raises(
        InvalidInputError, match=r"expected shape \[rows, 3\] \(3 features: a, b, c\)"
    ):
        layout.from_matrix(rows)


def test_wrong_width_message_shows_the_shape_given(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match=r"got \[1, 4\]"):
        layout.from_matrix([[1, 2, 3, 4]])


def test_long_feature_lists_are_previewed() -> None:
    wide = FeatureLayout({"features": [f"f{i}" for i in range(20)]})
    with pytest.raises(InvalidInputError, match=r"f7, … \(12 more\)"):
        wide.from_matrix([[1.0]])


@pytest.mark.parametrize("rows", [[], np.empty((0, 3), np.float32)], ids=["list", "array"])
def test_no_rows_is_refused(layout: FeatureLayout, rows: Any) -> None:
    with pytest.raises(InvalidInputError, match="no rows to predict"):
        layout.from_matrix(rows)


def test_nan_in_a_non_nullable_feature_names_feature_and_row(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match=r"feature 'c' is missing \(NaN or null\) in row 1"):
        layout.check(np.array([[1, 2, 3], [4, 5, np.nan]], np.float32))


def test_a_nullable_feature_may_be_nan(layout: FeatureLayout) -> None:
    features = layout.from_matrix([[1, None, 3], [4, float("nan"), 6]])
    assert np.isnan(features[:, 1]).all()


def test_none_becomes_nan_then_is_refused_when_not_nullable(layout: FeatureLayout) -> None:
    assert np.isnan(to_float32([[None, 1.0]], "x")[0, 0])
    with pytest.raises(InvalidInputError, match=r"feature 'a' is missing .* in row 0"):
        layout.from_matrix([[None, 2, 3]])


@pytest.mark.parametrize(
    "rows", [[["1", 2, 3]], [["x", "y", "z"]], [[1, "two", 3]]], ids=["digit", "text", "mixed"]
)
def test_text_in_a_matrix_is_refused(layout: FeatureLayout, rows: Any) -> None:
    with pytest.raises(InvalidInputError, match="`inputs` must hold only numbers"):
        layout.from_matrix(rows)


@pytest.mark.parametrize("rows", [[[1, 2, 3], [4, 5]], [[1, 2, 3], 4]], ids=["short", "scalar"])
def test_ragged_rows_are_refused(layout: FeatureLayout, rows: Any) -> None:
    with pytest.raises(InvalidInputError, match="rows of equal length"):
        layout.from_matrix(rows)


def test_objects_in_a_matrix_are_refused(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match="only numbers"):
        layout.from_matrix([[{"a": 1}, 2, 3]])


@pytest.mark.parametrize(
    "value", [1e39, -1e39, 10**39, 10**400], ids=["float", "negative", "int", "huge-int"]
)
def test_numbers_beyond_float32_are_refused_not_made_infinite(
    layout: FeatureLayout, value: float
) -> None:
    with pytest.raises(InvalidInputError, match="beyond the float32 range"):
        layout.from_matrix([[value, 2, 3]])
    with pytest.raises(InvalidInputError, match="beyond the float32 range"):
        layout.from_matrix([[value, None, 3]])


def test_check_refuses_float64_beyond_float32(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match="beyond the float32 range"):
        layout.check(np.array([[1e300, 0, 0]]))


# -- records --------------------------------------------------------------------------------


def test_records_are_put_in_schema_order(layout: FeatureLayout) -> None:
    features = layout.from_records([{"c": 3, "a": 1, "b": 2}, {"b": None, "a": 4, "c": 6}])
    np.testing.assert_array_equal(features[0], [1, 2, 3])
    assert features[1, 0] == 4
    assert np.isnan(features[1, 1])
    assert features[1, 2] == 6


@pytest.mark.parametrize("records", [[], {}, {"a": 1}, "rows", None], ids=str)
def test_records_must_be_a_non_empty_list(layout: FeatureLayout, records: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"non-empty list of \{feature: value\} objects"):
        layout.from_records(records)


def test_a_record_that_is_not_an_object_names_its_row(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match="row 1 is not an object"):
        layout.from_records([{"a": 1, "b": 2, "c": 3}, [1, 2, 3]])


def test_unknown_feature_names_are_listed_with_the_expected_ones(layout: FeatureLayout) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"unknown feature\(s\) in row 0: x, zz; the model expects a, b, c",
    ):
        layout.from_records([{"a": 1, "b": 2, "c": 3, "zz": 0, "x": 0}])


def test_missing_feature_names_are_listed(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match=r"missing feature\(s\) in row 1: a, c"):
        layout.from_records([{"a": 1, "b": 2, "c": 3}, {"b": 2}])


@pytest.mark.parametrize(
    ("value", "shown"),
    [("7", "'7'"), ("seven", "'seven'"), ([1], r"\[1\]"), ({"v": 1}, r"\{'v': 1\}")],
    ids=["digit-text", "text", "list", "object"],
)
def test_a_record_value_that_is_not_a_number_names_feature_and_row(
    layout: FeatureLayout, value: Any, shown: str
) -> None:
    good = {"a": 1, "b": 2, "c": 3}
    with pytest.raises(
        InvalidInputError, match=rf"feature 'c' in row 2 must be a number, got {shown}"
    ):
        layout.from_records([good, good, {"a": 1, "b": 2, "c": value}])


@pytest.mark.parametrize("value", [True, False])
def test_bool_values_in_records_are_refused(layout: FeatureLayout, value: bool) -> None:
    with pytest.raises(
        InvalidInputError, match=rf"feature 'a' in row 0 must be a number, got {value}"
    ):
        layout.from_records([{"a": value, "b": 2, "c": 3}])


def test_long_bad_values_are_shortened_in_the_message(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError) as caught:
        layout.from_records([{"a": "x" * 10_000, "b": 2, "c": 3}])
    assert len(str(caught.value)) < 200


def test_null_in_records_is_missing(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match=r"feature 'a' is missing .* in row 0"):
        layout.from_records([{"a": None, "b": None, "c": 3}])


@pytest.mark.parametrize("value", [1e39, 10**39, 10**400], ids=["float", "int", "huge-int"])
def test_record_values_beyond_float32_name_feature_and_row(
    layout: FeatureLayout, value: float
) -> None:
    with pytest.raises(InvalidInputError, match="feature 'b' in row 0 is beyond the float32 range"):
        layout.from_records([{"a": 1, "b": value, "c": 3}])


# -- columns --------------------------------------------------------------------------------


def test_columns_order_is_respected(layout: FeatureLayout) -> None:
    features = layout.from_columns(["c", "a", "b"], [[3, 1, 2], [6, 4, 5]])
    np.testing.assert_array_equal(features, [[1, 2, 3], [4, 5, 6]])


def test_a_list_of_columns_seen_before_is_ordered_the_same(layout: FeatureLayout) -> None:
    for _ in range(2):  # the second time from what the first remembered
        features = layout.from_columns(["c", "a", "b"], [[3, 1, 2]])
        np.testing.assert_array_equal(features, [[1, 2, 3]])
        np.testing.assert_array_equal(
            layout.from_columns(["a", "b", "c"], [[1, 2, 3]]), [[1, 2, 3]]
        )
    for _ in range(2):  # a refused list is not remembered as good
        with pytest.raises(InvalidInputError, match="more than once"):
            layout.from_columns(["a", "b", "c", "a"], [[1, 2, 3, 9]])


def test_the_column_orders_remembered_are_bounded(layout: FeatureLayout) -> None:
    wide = FeatureLayout({"features": [f"f{i}" for i in range(6)]})
    for order in itertools.islice(itertools.permutations(range(6)), MAX_COLUMN_ORDERS + 10):
        columns = [f"f{i}" for i in order]
        features = wide.from_columns(columns, [list(order)])
        np.testing.assert_array_equal(features, [list(range(6))])
    assert len(wide._orders) == MAX_COLUMN_ORDERS


@pytest.mark.parametrize("columns", ["a,b,c", None, ["a", 2, "c"], [["a"], "b", "c"]], ids=str)
def test_columns_must_be_a_list_of_names(layout: FeatureLayout, columns: Any) -> None:
    with pytest.raises(InvalidInputError, match="`columns` must be a list of feature names"):
        layout.from_columns(columns, [[1, 2, 3]])


def test_unknown_and_missing_columns(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown feature\(s\): d; the model expects"):
        layout.from_columns(["a", "b", "c", "d"], [[1, 2, 3, 4]])
    with pytest.raises(InvalidInputError, match=r"missing feature\(s\): b"):
        layout.from_columns(["a", "c"], [[1, 3]])


def test_duplicate_columns_are_refused(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match="`columns` names a more than once"):
        layout.from_columns(["a", "b", "c", "a"], [[1, 2, 3, 9]])


def test_column_data_must_match_the_columns(layout: FeatureLayout) -> None:
    with pytest.raises(
        InvalidInputError, match=r"`data` must be rows of 3 values.*got shape \[1, 2\]"
    ):
        layout.from_columns(["a", "b", "c"], [[1, 2]])
    with pytest.raises(InvalidInputError, match="`data` must hold only numbers"):
        layout.from_columns(["a", "b", "c"], [[1, "x", 3]])


# -- Open Inference Protocol named inputs ---------------------------------------------------


def test_one_named_matrix(layout: FeatureLayout) -> None:
    features = layout.from_named({"input": np.array([[1, 2, 3]], np.float64)}, "input")
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, [[1, 2, 3]])


def test_per_feature_inputs_are_stacked_in_schema_order(layout: FeatureLayout) -> None:
    inputs = {"c": [3, 6], "a": np.array([[1], [4]]), "b": [2, 5]}
    np.testing.assert_array_equal(layout.from_named(inputs, "input"), [[1, 2, 3], [4, 5, 6]])


def test_an_extra_input_next_to_input_is_refused(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match=r"unexpected input\(s\) a, extra next to 'input'"):
        layout.from_named({"input": [[1, 2, 3]], "extra": [1], "a": [1]}, "input")


def test_per_feature_inputs_of_different_lengths_are_refused(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match="same number of rows"):
        layout.from_named({"a": [1, 2], "b": [1], "c": [1, 2]}, "input")


def test_a_per_feature_input_must_be_one_column(layout: FeatureLayout) -> None:
    with pytest.raises(
        InvalidInputError, match=r"input 'b' must have shape \[rows\] or \[rows, 1\]"
    ):
        layout.from_named({"a": [1, 2], "b": [[1, 2]], "c": [1, 2]}, "input")


def test_neither_input_nor_every_feature_says_what_is_expected(layout: FeatureLayout) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"expected input 'input' of shape \[rows, 3\] FP32, or one input per feature "
        r"\(a, b, c\); got a, b",
    ):
        layout.from_named({"b": [1], "a": [1]}, "input")


@pytest.mark.parametrize(
    "inputs",
    [{"input": [["x", "y", "z"]]}, {"input": [[1, 2, 3], [4]]}, {"a": ["1"], "b": [2], "c": [3]}],
    ids=["text", "ragged", "per-feature-text"],
)
def test_named_inputs_refuse_text_and_ragged_rows(
    layout: FeatureLayout, inputs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError, match="must hold only numbers"):
        layout.from_named(inputs, "input")


def test_named_input_nan_is_checked(layout: FeatureLayout) -> None:
    with pytest.raises(InvalidInputError, match="feature 'a' is missing"):
        layout.from_named({"input": [[None, 2, 3]]}, "input")


# -- to_float32 -----------------------------------------------------------------------------


def test_to_float32_names_what_it_converts() -> None:
    with pytest.raises(InvalidInputError, match=r"`inputs\[0\].data` must hold only numbers"):
        to_float32(["a"], "inputs[0].data")


def test_to_float32_keeps_shape_and_accepts_integers_and_arrays() -> None:
    assert to_float32([[1, 2], [3, 4]], "x").shape == (2, 2)
    assert to_float32(np.arange(4, dtype=np.int64), "x").dtype == np.float32
    assert to_float32([[1, None], [None, 4]], "x").shape == (2, 2)


def test_check_records_refuses_each_bad_record_alone(layout: FeatureLayout) -> None:
    records: list[Any] = [
        {"a": 1, "b": 2, "c": 3},
        "not an object",
        {"a": 1, "c": 3},
        {"a": 1, "b": None, "c": 3, "extra": "ignored"},
        {"a": "1", "b": 2, "c": 3},
        {"a": None, "b": 2, "c": 3},
        {"a": 1e39, "b": 2, "c": 3},
        {"a": 10**400, "b": 2, "c": 3},
        {"a": False, "b": 2, "c": 3},
        {"a": 4, "b": 5, "c": 6},
    ]
    checked = layout.check_records(records)
    assert checked.kept == [0, 3, 9]
    np.testing.assert_array_equal(
        checked.features, np.array([[1, 2, 3], [1, np.nan, 3], [4, 5, 6]], np.float32)
    )
    assert checked.features.dtype == np.float32
    assert checked.features.flags.c_contiguous
    assert checked.reasons == {
        1: "not an object of feature: value",
        2: "missing feature(s): b",
        4: "feature 'a' must be a number, got '1'",
        5: "feature 'a' is null; the model's schema requires a value",
        6: "feature 'a' is beyond the float32 range (±3.403e+38) the model computes in",
        7: "a value is beyond the float32 range (±3.403e+38) the model computes in",
        8: "feature 'a' must be a number, got False",
    }


def test_check_records_of_nothing_good_is_an_empty_matrix(layout: FeatureLayout) -> None:
    checked = layout.check_records([{"a": "x"}, 3])
    assert checked.features.shape == (0, 3)
    assert checked.kept == []
    assert set(checked.reasons) == {0, 1}


def test_check_records_with_one_feature() -> None:
    checked = FeatureLayout({"features": ["only"]}).check_records([{"only": 2}, {"x": 1}])
    assert checked.features.tolist() == [[2.0]]
    assert checked.reasons == {1: "missing feature(s): only"}

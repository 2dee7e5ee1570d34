from collections.abc import Iterator
from typing import Any

import pytest

from shipyard.errors import (
    ConflictError,
    InvalidInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from shipyard.monitoring.feedback import (
    LabelSchema,
    ingest_feedback,
    label_schema,
    label_text,
    parse_feedback,
)
from shipyard.registry import Registry
from shipyard.settings import Settings

INPUT = {"features": ["a"], "dtypes": {"a": "float32"}}
BINARY = {"task": "classification", "classes": [0, 1], "outputs": []}
FRUIT = {"task": "classification", "classes": ["apple", "pear"], "outputs": []}
REGRESSION = {"task": "regression", "outputs": [{"name": "prediction", "dtype": "float32"}]}
INTS = LabelSchema("fraud", "classification", ("0", "1"))
WORDS = LabelSchema("fruit", "classification", ("apple", "pear"))
NUMBERS = LabelSchema("price", "regression")


def add(registry: Registry, name: str, output_schema: dict[str, Any], **extra: Any) -> int:
    return registry.register_version(
        name,
        files={"model.onnx": name.encode()},
        format="onnx",
        input_schema=INPUT,
        output_schema=output_schema,
        metrics={},
        **extra,
    ).version


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    """fraud (classes 0, 1), fruit (apple, pear) and price (regression), on each database."""
    with Registry.open(settings) as opened:
        add(opened, "fraud", BINARY)
        add(opened, "fruit", FRUIT)
        add(opened, "price", REGRESSION)
        yield opened


@pytest.mark.parametrize(
    ("labels", "given", "stored"),
    [
        (INTS, 1, "1"),
        (INTS, 0, "0"),
        (INTS, True, "1"),
        (INTS, False, "0"),
        (INTS, 1.0, "1"),
        (INTS, "1", "1"),
        (WORDS, "pear", "pear"),
        (NUMBERS, 3, "3.0"),
        (NUMBERS, 0.1, "0.1"),
        (NUMBERS, -2.5e-7, "-2.5e-07"),
    ],
)
def test_labels_are_stored_as_the_text_the_prediction_log_keeps(
    labels: LabelSchema, given: Any, stored: str
) -> None:
    assert parse_feedback([{"id": "p1", "label": given}], labels) == [("p1", stored)]


def test_class_text_matches_the_logged_predictions() -> None:
    assert [label_text(v) for v in (True, False, 0, 7, "yes")] == ["1", "0", "0", "7", "yes"]


@pytest.mark.parametrize(
    ("labels", "label", "match"),
    [
        (INTS, "yes", "'yes' is not a class of fraud \\(classes: 0, 1\\)"),
        (INTS, 0.5, "0.5 is not a class"),
        (INTS, 2, "2 is not a class"),
        (INTS, None, "None is not a class"),
        (INTS, {"value": 1}, "is not a class"),
        (INTS, [1], "is not a class"),
        (WORDS, 1, "1 is not a class of fruit \\(classes: apple, pear\\)"),
        (WORDS, "Apple", "not a class"),
        (NUMBERS, "3.5", "'3.5' is not a number, and price is a regression model"),
        (NUMBERS, True, "is not a number"),
        (NUMBERS, None, "is not a number"),
        (NUMBERS, float("nan"), "not a finite number"),
        (NUMBERS, float("inf"), "not a finite number"),
    ],
)
def test_a_label_of_the_wrong_type_is_refused_naming_the_id(
    labels: LabelSchema, label: Any, match: str
) -> None:
    items = [{"id": "ok", "label": labels.classes[0] if labels.classes else 1.0}]
    items.append({"id": "tx-42", "label": label})
    with pytest.raises(InvalidInputError, match=f"id 'tx-42': the label .*{match}") as caught:
        parse_feedback(items, labels)
    assert "nothing of this batch was stored" in str(caught.value)


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ({"id": "a", "label": 1}, "a list of"),
        ("a,1", "a list of"),
        ([{"id": "a", "label": 1}, ["b", 1]], "feedback item 1 is \\['b', 1\\], not an"),
        ([{"label": 1}], "feedback item 0 has no `id` string \\(got None\\)"),
        ([{"id": 7.5, "label": 1}], 'no `id` string \\(got 7.5\\).*a JSON string such as "7"'),
        ([{"id": True, "label": 1}], "feedback item 0 has no `id` string \\(got True\\)"),
        ([{"id": "", "label": 1}], "feedback item 0 has no `id` string"),
        ([{"id": "x" * 201, "label": 1}], "201 characters long"),
        ([{"id": "a"}], "feedback for id 'a' has no `label`"),
        ([{"id": "a", "label": 1, "model": "fraud"}], "id 'a' has unknown fields model"),
    ],
)
def test_a_badly_shaped_batch_is_refused(items: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_feedback(items, INTS)


def test_an_integer_id_is_its_decimal_text_as_when_predicting() -> None:
    assert parse_feedback([{"id": 7, "label": 1}, {"id": "8", "label": 0}], INTS) == [
        ("7", "1"),
        ("8", "0"),
    ]


def test_a_batch_over_the_limit_is_refused() -> None:
    items = [{"id": str(i), "label": 1} for i in range(4)]
    assert len(parse_feedback(items, INTS, max_items=4)) == 4
    with pytest.raises(PayloadTooLargeError, match="4 feedback items in one batch; send at most 3"):
        parse_feedback(items, INTS, max_items=3)


def test_label_schema_comes_from_the_production_version(registry: Registry) -> None:
    assert label_schema(registry, "fraud") == INTS
    assert label_schema(registry, "fruit") == WORDS
    assert label_schema(registry, "price@production") == NUMBERS
    # The latest version has other classes, but production is the reference.
    add(registry, "fruit", {"task": "classification", "classes": ["fig"], "outputs": []})
    registry.promote("fruit:1")
    assert label_schema(registry, "fruit").classes == ("apple", "pear")
    registry.promote("fruit:2")
    assert label_schema(registry, "fruit").classes == ("fig",)


def test_label_schema_falls_back_to_the_reference_profile(registry: Registry) -> None:
    profile = {"rows": 2, "features": {}, "target": {"name": "y", "classes": {"0": 0.5, "1": 0.5}}}
    add(registry, "old", {"outputs": []}, reference_profile=profile)
    assert label_schema(registry, "old") == LabelSchema("old", "classification", ("0", "1"))
    add(registry, "blind", {"outputs": []})
    with pytest.raises(ConflictError, match="blind names no task and classes"):
        label_schema(registry, "blind")
    with pytest.raises(ModelNotFoundError):
        label_schema(registry, "nope")


def test_ingest_stores_a_good_batch_and_reports_duplicates(registry: Registry) -> None:
    first = ingest_feedback(
        registry, "fraud", [{"id": "a", "label": 1}, {"id": "b", "label": False}], "http"
    )
    assert (first.received, first.accepted, first.duplicates) == (2, 2, [])
    again = ingest_feedback(
        registry, "fraud", [{"id": "b", "label": 1}, {"id": "c", "label": "0"}], "file"
    )
    assert (again.accepted, again.duplicates) == (1, ["b"])
    stored = registry.monitoring.feedback_after("fraud", 0)
    assert [(r.id, r.label, r.source) for r in stored] == [
        ("a", "1", "http"),
        ("b", "0", "http"),
        ("c", "0", "file"),
    ]
    assert registry.monitoring.feedback_counts("fraud")["duplicate"] == 1


def test_ingest_stores_nothing_of_a_batch_with_one_bad_label(registry: Registry) -> None:
    items = [{"id": "a", "label": 1}, {"id": "b", "label": "yes"}]
    with pytest.raises(InvalidInputError, match="id 'b'"):
        ingest_feedback(registry, "fraud", items, "http")
    assert registry.monitoring.feedback_after("fraud", 0) == []
    with pytest.raises(ModelNotFoundError):
        ingest_feedback(registry, "nope", [{"id": "a", "label": 1}], "http")
    with pytest.raises(InvalidInputError, match="source 'mail'"):
        ingest_feedback(registry, "fraud", [], "mail")
    with pytest.raises(PayloadTooLargeError):
        ingest_feedback(registry, "fraud", items, "http", max_items=1)

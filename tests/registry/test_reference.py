import pytest

from shipyard.errors import InvalidInputError
from shipyard.registry import ModelRef


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fraud", ModelRef("fraud")),
        ("fraud:3", ModelRef("fraud", 3)),
        ("fraud@production", ModelRef("fraud", None, "production")),
        ("my-model_v2.1:12", ModelRef("my-model_v2.1", 12)),
        (" fraud@staging ", ModelRef("fraud", None, "staging")),
    ],
)
def test_parse_the_three_forms(text: str, expected: ModelRef) -> None:
    parsed = ModelRef.parse(text)
    assert parsed == expected
    assert ModelRef.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["", "fraud:", "fraud:abc", "fraud@", "a b", "fraud:1@x", "/etc", ".hidden"]
)
def test_invalid_references_explain_the_forms(text: str) -> None:
    with pytest.raises(InvalidInputError, match="NAME:VERSION") as raised:
        ModelRef.parse(text)
    assert "NAME@ALIAS" in str(raised.value)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidInputError, match="not both"):
        ModelRef("fraud", 1, "production")
    with pytest.raises(InvalidInputError, match="alias"):
        ModelRef("fraud", None, "no spaces")
    with pytest.raises(InvalidInputError, match="versions run from 1"):
        ModelRef("fraud", 0)


def test_parse_passes_a_ref_through() -> None:
    ref = ModelRef("fraud", 2)
    assert ModelRef.parse(ref) is ref


@pytest.mark.parametrize("text", ["fraud:0", "fraud:2147483648", "fraud:" + "9" * 5000])
def test_versions_outside_what_the_database_holds_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="out of range; versions run from 1 to 2147483647"):
        ModelRef.parse(text)

from pathlib import Path

import pytest

from shipyard.errors import SpecError
from shipyard.examples import example_spec
from shipyard.pipeline import load_spec, parse_spec

VALID = """\
name: t
data:
  path: data.csv
  dataset: fraud
  target: Class
model:
  name: fraud
  type: HistGradientBoostingClassifier
  params: {max_iter: 10}
metrics: [average_precision, roc_auc]
"""


def test_example_spec_is_valid() -> None:
    spec, text = load_spec(example_spec("fraud"))
    assert spec.model.name == "fraud"
    assert spec.data.table_schema().feature_names[:2] == ["Time", "V1"]
    assert len(spec.data.table_schema().feature_names) == 30
    assert "HistGradientBoostingClassifier" in text


def test_repository_example_links_to_the_packaged_spec() -> None:
    repo_copy = Path(__file__).parents[2] / "examples" / "fraud" / "pipeline.yaml"
    assert repo_copy.read_text() == example_spec("fraud").read_text()


def test_relative_data_path_is_relative_to_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "specs" / "s.yaml"
    path.parent.mkdir()
    path.write_text(VALID)
    spec, _ = load_spec(path)
    assert spec.data.path == tmp_path / "specs" / "data.csv"


def test_defaults() -> None:
    spec = parse_spec(VALID)
    assert spec.promotion.alias == "production"
    assert spec.promotion_metric == "average_precision"
    assert spec.split.test_size == 0.2


def test_with_data_file_replaces_a_generator(tmp_path: Path) -> None:
    spec, _ = load_spec(example_spec("fraud"))
    swapped = spec.with_data_file(tmp_path / "x.parquet")
    assert swapped.data.path == tmp_path / "x.parquet"
    assert swapped.data.generate is None
    assert swapped.data.table_schema() == spec.data.table_schema()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID.replace("  type: HistGradientBoostingClassifier\n", ""), ":6: model.type: required"),
        (
            VALID.replace("HistGradientBoostingClassifier", "Nope"),
            ":8: model.type: unknown model type",
        ),
        (VALID.replace("name: fraud", "name: fraud\n  colour: red"), ":8: model.colour: unknown"),
        (VALID.replace("roc_auc]", "rmse]"), "unknown classification metric 'rmse'"),
        (VALID.replace("  path: data.csv\n", ""), "data: give exactly one of `path`"),
        (
            VALID.replace("dataset: fraud", "dataset: nope"),
            ":4: data.dataset: unknown dataset 'nope'",
        ),
        (VALID + "split: {test_size: 2}\n", ":11: split.test_size: Input should be less than 1"),
        (VALID + "task: regression\n", "is for classification, not regression"),
        ("name: [unclosed\n", "<spec>:2: not valid YAML"),
        ("- a\n- b\n", "a spec is a YAML mapping"),
        (VALID.replace("target: Class", "target: Nope"), "Nope"),
    ],
)
def test_invalid_specs_name_the_field_and_line(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(text).data.table_schema()
    assert expected in str(raised.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no spec file at"):
        load_spec(tmp_path / "missing.yaml")

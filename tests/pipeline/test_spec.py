import re
from pathlib import Path

import pytest

from shipyard.errors import SpecError
from shipyard.examples import example_spec
from shipyard.pipeline import load_spec, parse_spec
from shipyard.pipeline.spec import find_spec

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


def test_a_name_that_is_no_file_is_the_packaged_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_spec("fraud") == example_spec("fraud")
    spec, text = load_spec("fraud")
    assert spec.name == "fraud"
    assert text == example_spec("fraud").read_text()


def test_a_file_of_that_name_wins_over_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fraud").write_text(VALID)
    assert find_spec("fraud") == Path("fraud")
    assert load_spec("fraud")[0].name == "t"


def test_an_unknown_name_lists_the_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as raised:
        find_spec("frod")
    assert "no packaged example of that name; examples: cifar, digits, fraud" in str(raised.value)
    assert "shipyard examples list" in str(raised.value)


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


def test_missing_spec_file_names_the_path_and_the_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as raised:
        load_spec("examples/fraud/pipeline.yaml")
    message = str(raised.value)
    assert f"no spec file at {tmp_path / 'examples' / 'fraud' / 'pipeline.yaml'};" in message
    assert "`shipyard examples list`" in message


COLUMNS_ONLY = VALID.replace("  path: data.csv\n  dataset: fraud\n", "").replace(
    "  target: Class",
    "  columns: [{name: a, dtype: float64}, {name: Class, dtype: int64}]\n  target: Class",
)


def test_a_spec_without_a_source_takes_the_data_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(COLUMNS_ONLY)
    with pytest.raises(SpecError, match=r"s.yaml:2: data: give exactly one of .* or the file"):
        load_spec(path)
    spec, _ = load_spec(path, data_file=Path("rows.csv"))
    assert spec.data.path == Path("rows.csv")  # relative to where the command runs
    assert spec.data.table_schema().feature_names == ["a"]


def test_a_data_file_replaces_a_generator_and_keeps_its_schema() -> None:
    spec, _ = load_spec(example_spec("fraud"), data_file=Path("x.parquet"))
    assert spec.data.path == Path("x.parquet")
    assert spec.data.generate is None
    assert spec.data.dataset == "fraud"


BLOCK_PARAMS = VALID.replace(
    "  params: {max_iter: 10}\n", "  params:\n    max_iter: 10\n    learning_rte: 0.1\n"
)


def test_a_misspelled_estimator_parameter_is_caught_at_load_with_its_line() -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(BLOCK_PARAMS, source="pipeline.yaml")
    assert str(raised.value) == (
        "pipeline.yaml:11: model.params: unknown parameter 'learning_rte' for "
        "HistGradientBoostingClassifier; did you mean 'learning_rate'?"
    )


def test_an_unknown_parameter_without_a_close_match_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(VALID.replace("max_iter: 10", "colour: 3"))
    assert ":9: model.params: unknown parameter 'colour'" in str(raised.value)
    assert "known: categorical_features, class_weight," in str(raised.value)


def test_a_monitoring_section_validates_with_defaults() -> None:
    spec = parse_spec(VALID + "monitoring:\n  windows: {rows: 50}\n  drift: {drift_share: 0.3}\n")
    assert spec.monitoring is not None
    assert spec.monitoring.windows.rows == 50
    assert spec.monitoring.windows.minutes == 60
    assert spec.monitoring.drift_config().drift_share == 0.3
    assert parse_spec(VALID).monitoring is None


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("  windows: {rows: 0}", "monitoring.windows.rows"),
        ("  performance: {metric: speed}", "unknown live metric 'speed'"),
        ("  drift: {drift_share: 2}", "monitoring.drift"),
        ("  window: {rows: 5}", "monitoring.window: unknown field"),
    ],
)
def test_a_bad_monitoring_section_names_field_and_line(section: str, named: str) -> None:
    with pytest.raises(SpecError, match=r"s.yaml:1[12]: ") as caught:
        parse_spec(VALID + "monitoring:\n" + section + "\n", source="s.yaml")
    assert named in str(caught.value)


def test_a_retrain_section_refuses_a_promotion_alias_other_than_production() -> None:
    text = (
        VALID
        + "promotion:\n  metric: average_precision\n  alias: staging\nretrain:\n  cooldown: 1h\n"
    )
    with pytest.raises(SpecError) as raised:
        parse_spec(text, source="s.yaml")
    message = str(raised.value)
    assert "s.yaml:13: promotion.alias: a spec with a `retrain:` section promotes to " in message
    assert "'production'" in message
    assert "not 'staging'" in message
    # Without retrain:, any alias is fine; with it, production is.
    assert parse_spec(VALID + "promotion: {alias: staging}\n").promotion.alias == "staging"
    assert parse_spec(VALID + "retrain: {cooldown: 1h}\n").retrain is not None


def test_a_shadow_gate_validates_with_a_default_timeout() -> None:
    spec = parse_spec(VALID + "retrain:\n  gate: {shadow: 200}\n")
    assert spec.retrain is not None
    assert spec.retrain.gate.shadow == 200
    assert spec.retrain.gate.shadow_timeout == 3600
    timed = parse_spec(VALID + "retrain:\n  gate: {shadow: 5, shadow_timeout: 30m}\n")
    assert timed.retrain is not None
    assert timed.retrain.gate.shadow_timeout == 1800
    assert parse_spec(VALID + "retrain: {cooldown: 1h}\n").retrain.gate.shadow is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("gate", "named"),
    [
        ("{shadow: 0}", "retrain.gate.shadow: Input should be greater than or equal to 1"),
        ("{shadow: -3}", "retrain.gate.shadow: Input should be greater than or equal to 1"),
        ("{shadow: 2.5}", "retrain.gate.shadow: Input should be a valid integer"),
        ("{shadow: many}", "retrain.gate.shadow: Input should be a valid integer"),
        ("{shadow: true}", "retrain.gate.shadow: Input should be a valid integer"),
        ("{shadow: 5, shadow_timeout: 0}", "retrain.gate.shadow_timeout"),
        ("{shadow: 5, shadow_timeout: soon}", "not a duration; write a number of seconds"),
        ("{shadows: 5}", "retrain.gate.shadows: unknown field"),
    ],
)
def test_a_bad_shadow_gate_names_field_and_line(gate: str, named: str) -> None:
    with pytest.raises(SpecError, match=r"s.yaml:1[12]: ") as caught:
        parse_spec(VALID + "retrain:\n  gate: " + gate + "\n", source="s.yaml")
    assert named in str(caught.value)


ENSEMBLE = """\
name: houses
data:
  generate: {dataset: housing, rows: 100}
  target: price
task: regression
model: {name: houses, type: DecisionTreeRegressor, params: {max_depth: 4}}
metrics: [r2]
ensemble:
  learners: 8
"""


def test_an_ensemble_section_validates_with_defaults() -> None:
    ensemble = parse_spec(ENSEMBLE).ensemble
    assert ensemble is not None
    assert (ensemble.learners, ensemble.bootstrap, ensemble.sample_fraction) == (8, True, 1.0)
    assert ensemble.required == 8  # min_learners defaults to all of them
    assert ensemble.feature_count(7) == 7
    share = parse_spec(ENSEMBLE + "  features: 0.5\n  min_learners: 6\n").ensemble
    assert share is not None
    assert (share.feature_count(7), share.required) == (4, 6)
    count = parse_spec(ENSEMBLE + "  features: 3\n").ensemble
    assert count is not None
    assert count.feature_count(7) == 3
    assert parse_spec(VALID).ensemble is None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "  min_learners: 9\n",
            ":10: ensemble.min_learners: min_learners 9 is more than the 8 learners",
        ),
        ("  min_learners: 0\n", ":10: ensemble.min_learners: Input should be greater than"),
        ("  features: 1.5\n", ":10: ensemble.features: a share of the features is in (0, 1]"),
        ("  features: 0\n", ":10: ensemble.features: a count of features is at least 1, not 0"),
        ("  features: 8\n", ":10: ensemble.features: features 8 is more than the 7 features"),
        ("  features: many\n", ":10: ensemble.features: give a share of the features"),
        ("  sample_fraction: 0\n", ":10: ensemble.sample_fraction: Input should be greater"),
        ("  sample_fraction: 1.2\n", ":10: ensemble.sample_fraction: Input should be less"),
        ("  seed: -1\n", ":10: ensemble.seed: Input should be greater than or equal to 0"),
        ("  bootstrap: maybe\n", ":10: ensemble.bootstrap: Input should be a valid boolean"),
        ("  lerners: 3\n", ":10: ensemble.lerners: unknown field"),
    ],
)
def test_a_bad_ensemble_section_names_field_and_line(lines: str, expected: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(ENSEMBLE + lines, source="s.yaml")
    assert f"s.yaml{expected}" in str(raised.value)


@pytest.mark.parametrize(
    ("learners", "expected"), [("0", "greater than or equal to 1"), ("x", "integer")]
)
def test_an_ensemble_needs_at_least_one_learner(learners: str, expected: str) -> None:
    with pytest.raises(SpecError, match=rf"s.yaml:9: ensemble.learners: .*{expected}"):
        parse_spec(ENSEMBLE.replace("learners: 8", f"learners: {learners}"), source="s.yaml")


IMAGES = """\
name: pictures
data:
  images: {images}
task: {task}
model: {{name: pictures, type: {type}}}
metrics: [accuracy]
"""


def _images_spec(images: str, *, task: str = "image_classification", type: str = "cnn") -> str:
    return IMAGES.format(images=images, task=task, type=type)


def test_an_image_spec_is_a_table_of_pixels_with_a_label() -> None:
    spec = parse_spec(_images_spec("{dataset: digits}", type="mlp"))
    schema = spec.data.table_schema()
    assert schema.target == "label"
    assert schema.feature_names[:2] == ["pixel_0", "pixel_1"]
    assert len(schema.feature_names) == 64
    assert schema.column("label").dtype == "int64"
    assert spec.image_format is not None
    assert spec.image_format.max_value == 16
    assert spec.estimator_task == "classification"


def test_cifar_and_folder_specs_name_their_format_and_label_by_name(tmp_path: Path) -> None:
    cifar = parse_spec(_images_spec("{cifar: batches}"))
    assert cifar.image_format is not None
    assert (cifar.image_format.width, cifar.image_format.mode) == (32, "RGB")
    assert cifar.data.table_schema().column("label").dtype == "string"
    folder = parse_spec(_images_spec("{folder: pics, width: 28, height: 28, mode: L}"))
    assert folder.image_format is not None
    assert folder.image_format.size == 28 * 28
    # Relative folders are relative to the spec file, as data.path is.
    (tmp_path / "spec.yaml").write_text(_images_spec("{folder: pics, width: 8, height: 8}"))
    loaded, _ = load_spec(tmp_path / "spec.yaml")
    assert loaded.data.images is not None
    assert loaded.data.images.folder == tmp_path / "pics"


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("{dataset: digits, cifar: x}", "give exactly one of `dataset`"),
        ("{}", "give exactly one of `dataset`"),
        ("{dataset: cats}", "unknown image dataset 'cats'; known image datasets: digits, shapes"),
        ("{folder: pics}", "an image folder needs the size its images are scaled to"),
        ("{cifar: x, width: 32}", "width: only an image `folder` is given a format"),
        ("{dataset: digits, rows: 100}", "`rows` and `seed` are for a generated image dataset"),
        ("{folder: pics, width: 8, height: 8, mode: CMYK}", "Input should be 'L' or 'RGB'"),
    ],
)
def test_bad_image_sources_say_what_to_give(images: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)) as raised:
        parse_spec(_images_spec(images))
    assert "data.images" in str(raised.value)


def test_task_images_and_cnn_go_together() -> None:
    with pytest.raises(SpecError, match=r":2: data: task image_classification trains on images"):
        parse_spec(VALID.replace("metrics:", "task: image_classification\nmetrics:"))
    with pytest.raises(SpecError, match=r"task: data.images needs `task: image_classification`"):
        parse_spec(_images_spec("{dataset: digits}", task="classification", type="mlp"))
    cnn_on_a_table = VALID.replace("HistGradientBoostingClassifier", "cnn").replace(
        "params: {max_iter: 10}", "params: {}"
    )
    with pytest.raises(SpecError, match=r"model.type: model type cnn trains on images"):
        parse_spec(cnn_on_a_table)
    bagged = _images_spec("{dataset: digits}") + "ensemble: {learners: 2}\n"
    with pytest.raises(SpecError, match="an image classifier is not bagged"):
        parse_spec(bagged)


def test_the_image_size_of_a_cnn_comes_from_its_images() -> None:
    plain = _images_spec("{dataset: digits}")
    text = plain.replace("type: cnn}", "type: cnn, params: {height: 9}}")
    with pytest.raises(SpecError, match="unknown parameter 'height' for cnn"):
        parse_spec(text)
    text = plain.replace("type: cnn}", "type: cnn, params: {epoch: 3}}")
    with pytest.raises(SpecError, match="did you mean 'epochs'"):
        parse_spec(text)


def test_an_image_spec_run_with_a_data_file_keeps_its_image_format(tmp_path: Path) -> None:
    spec = parse_spec(_images_spec("{dataset: digits}"), data_file=tmp_path / "pixels.csv")
    assert spec.data.path == tmp_path / "pixels.csv"
    assert spec.image_format is not None
    assert spec.image_format.width == 8
    assert spec.with_data_file(tmp_path / "other.csv").image_format == spec.image_format


def test_the_image_examples_are_valid() -> None:
    digits, _ = load_spec(example_spec("digits"))
    assert (digits.task, digits.model.type) == ("image_classification", "mlp")
    cifar, _ = load_spec(example_spec("cifar"))
    assert cifar.model.type == "cnn"
    assert cifar.data.images is not None
    assert cifar.data.images.cifar == example_spec("cifar").parent / "cifar-10-batches-bin"

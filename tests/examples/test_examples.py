"""The packaged examples: the one source of truth, copied by name into any folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shipyard.errors import ConflictError, InvalidInputError, NotFoundError
from shipyard.examples import copy_example, example_names, example_spec, get_example
from shipyard.inference.predictor import load_predictor
from shipyard.pipeline import Runner, load_spec
from shipyard.registry import Registry
from shipyard.settings import Settings

REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PACKAGED = Path(__file__).resolve().parents[2] / "src" / "shipyard" / "examples"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("name", example_names())
def test_the_repository_copy_equals_the_packaged_one_byte_for_byte(name: str) -> None:
    repo = REPO_EXAMPLES / name
    assert not any(p.is_symlink() for p in repo.iterdir()), "a symlink dangles after cp -r"
    assert _files(repo) == _files(PACKAGED / name)


def test_every_repository_example_is_packaged() -> None:
    assert sorted(p.name for p in REPO_EXAMPLES.iterdir() if p.is_dir()) == example_names()


def test_fraud_ships_its_spec_and_request_bodies() -> None:
    example = get_example("fraud")
    assert example.files[0] == "pipeline.yaml"
    assert set(example.files) == {
        "pipeline.yaml",
        "request.json",
        "oip-request.json",
        "mlflow-request.json",
    }
    assert "fraud" in example.description
    assert example_spec("fraud").is_file()


def test_an_unknown_example_names_the_known_ones() -> None:
    with pytest.raises(
        NotFoundError, match="no packaged example named 'nope'; examples: cifar, digits, fraud"
    ):
        get_example("nope")


def test_copy_writes_every_file_and_again_is_a_no_op(tmp_path: Path) -> None:
    target = tmp_path / "examples" / "fraud"
    written = copy_example("fraud", target)
    assert [p.name for p in written] == list(get_example("fraud").files)
    assert _files(target) == _files(PACKAGED / "fraud")
    assert copy_example("fraud", target) == written


def test_copy_refuses_to_overwrite_other_contents_unless_forced(tmp_path: Path) -> None:
    copy_example("fraud", tmp_path)
    (tmp_path / "request.json").write_text("{}")
    (tmp_path / "pipeline.yaml").unlink()
    with pytest.raises(ConflictError, match=r"request\.json is already there"):
        copy_example("fraud", tmp_path)
    assert not (tmp_path / "pipeline.yaml").exists()  # nothing written before the refusal
    copy_example("fraud", tmp_path, force=True)
    assert _files(tmp_path) == _files(PACKAGED / "fraud")


def test_copy_into_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        copy_example("fraud", target)


def test_housing_ships_an_ensemble_spec_and_request_bodies() -> None:
    example = get_example("housing")
    assert example.files == (
        "pipeline.yaml",
        "mlflow-request.json",
        "oip-request.json",
        "request.json",
    )
    spec, _ = load_spec(example_spec("housing"))
    assert spec.task == "regression"
    assert spec.ensemble is not None
    assert spec.metrics == ["r2", "rmse", "mae"]
    features = spec.data.table_schema().feature_names
    body = json.loads((PACKAGED / "housing" / "request.json").read_text())
    assert [list(row) for row in body["instances"]] == [features, features]
    oip = json.loads((PACKAGED / "housing" / "oip-request.json").read_text())
    assert oip["inputs"][0]["shape"] == [2, len(features)]


def test_the_housing_example_trains_a_good_ensemble_that_predicts_its_request(
    home: Path,
) -> None:
    spec, text = load_spec(example_spec("housing"))
    with Registry.open(Settings(home=home)) as registry:  # the embedded defaults: one database
        result = Runner(registry).run(spec, text)
        assert result.metrics["r2"] > 0.85
        assert result.version.format == "onnx"
        assert result.version.tags["learners"] == "32"
        predictor = load_predictor(registry.load_artifact("housing@production"))
    body = json.loads((PACKAGED / "housing" / "request.json").read_text())
    rows = np.array([list(row.values()) for row in body["instances"]], dtype=np.float32)
    prices = predictor.predict(rows)["prediction"]
    assert ((prices > 50_000) & (prices < 2_000_000)).all()

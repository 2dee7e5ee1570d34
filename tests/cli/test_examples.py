"""shipyard examples: the packaged examples listed and copied into any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.examples import example_spec

from .conftest import Cli


def test_list_names_each_example_and_how_to_use_it(cli: Cli) -> None:
    result = cli("examples", "list")
    assert result.code == 0, result.err
    assert "fraud" in result.out
    assert "request.json" in result.out
    assert "shipyard pipeline run NAME" in result.out


def test_copy_writes_into_examples_name_by_default(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("examples", "copy", "fraud")
    assert result.code == 0, result.err
    assert "copied example fraud to examples/fraud" in result.out
    copied = tmp_path / "examples" / "fraud" / "pipeline.yaml"
    assert copied.read_bytes() == example_spec("fraud").read_bytes()
    assert (tmp_path / "examples" / "fraud" / "mlflow-request.json").is_file()


def test_copy_into_a_given_folder_and_conflicts(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    assert cli("examples", "copy", "fraud", str(target)).code == 0
    (target / "pipeline.yaml").write_text("name: changed\n")
    refused = cli("examples", "copy", "fraud", str(target))
    assert refused.code == 4
    assert "--force" in refused.err
    assert cli("examples", "copy", "fraud", str(target), "--force").code == 0
    assert (target / "pipeline.yaml").read_bytes() == example_spec("fraud").read_bytes()


def test_copy_of_an_unknown_example_names_the_known_ones(cli: Cli, tmp_path: Path) -> None:
    result = cli("examples", "copy", "nope", str(tmp_path))
    assert result.code == 3
    assert "examples: cifar, digits, fraud" in result.err

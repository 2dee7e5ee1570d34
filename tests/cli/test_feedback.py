"""shipyard feedback FILE: labels from a table stored for the monitor, and what goes wrong."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shipyard.cli import feedback as feedback_command
from shipyard.registry import Registry
from shipyard.settings import Settings

from .conftest import Cli


def stored(home: Path, model: str = "fraud") -> list[tuple[str, str, str]]:
    with Registry.open(Settings(home=home)) as registry:
        return [(r.id, r.label, r.source) for r in registry.monitoring.feedback_after(model, 0)]


def test_labels_from_a_csv_are_stored_and_duplicates_counted(
    model_cli: Cli, home_with_model: Path, tmp_path: Path
) -> None:
    table = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["tx-1", "tx-2", "tx-3"], "label": [1, 0, 0]}).to_csv(table, index=False)
    result = model_cli("feedback", str(table), "--model", "fraud")
    assert result.code == 0, result.err
    assert "fraud: received 3 labels, accepted 3, 0 duplicates" in result.out
    assert "shipyard monitor report fraud" in result.out

    again = tmp_path / "again.csv"
    pd.DataFrame({"id": ["tx-3", "tx-4"], "label": [1, 1]}).to_csv(again, index=False)
    result = model_cli("feedback", str(again))  # the home's only model
    assert result.code == 0, result.err
    assert "received 2 labels, accepted 1, 1 duplicates (already labelled, skipped: tx-3)" in (
        result.out
    )
    assert stored(home_with_model) == [
        ("tx-1", "1", "file"),
        ("tx-2", "0", "file"),
        ("tx-3", "0", "file"),
        ("tx-4", "1", "file"),
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_other_formats_and_column_names(
    model_cli: Cli, home_with_model: Path, tmp_path: Path, suffix: str
) -> None:
    table = tmp_path / f"labels{suffix}"
    frame = pd.DataFrame({"tx": [7, 8], "is_fraud": [True, False], "other": ["x", "y"]})
    if suffix == ".parquet":
        frame.to_parquet(table)
    else:
        frame.to_json(table, orient="records", lines=True)
    result = model_cli(
        "feedback", str(table), "-m", "fraud", "--id-column", "tx", "--label-column", "is_fraud"
    )
    assert result.code == 0, result.err
    assert stored(home_with_model) == [("7", "1", "file"), ("8", "0", "file")]


def test_a_large_file_goes_in_batches_with_a_progress_bar(
    model_cli: Cli, home_with_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_MAX_FEEDBACK_ITEMS", "4")
    monkeypatch.setattr(feedback_command, "PROGRESS_AFTER_S", -1.0)  # show it at once
    ids = [f"tx-{i}" for i in range(10)]
    table = tmp_path / "labels.csv"
    pd.DataFrame({"id": [*ids, "tx-0"], "label": [i % 2 for i in range(11)]}).to_csv(
        table, index=False
    )
    result = model_cli("feedback", str(table))
    assert result.code == 0, result.err
    assert "received 11 labels, accepted 10, 1 duplicates" in result.out
    assert [i for i, _, _ in stored(home_with_model)] == ids


def test_a_bad_label_stores_nothing_and_names_the_id(
    model_cli: Cli, home_with_model: Path, tmp_path: Path
) -> None:
    table = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["tx-1", "tx-2"], "label": ["1", "yes"]}).to_csv(table, index=False)
    result = model_cli("feedback", str(table))
    assert result.code == 2
    assert "feedback for id 'tx-2': the label 'yes' is not a class of fraud" in result.err
    assert stored(home_with_model) == []

    halves = tmp_path / "halves.csv"
    pd.DataFrame({"id": ["tx-1", "tx-2"], "label": [1.0, 0.5]}).to_csv(halves, index=False)
    result = model_cli("feedback", str(halves))
    assert result.code == 2
    assert "id 'tx-2': the label 0.5" in result.err

    blank = tmp_path / "blank.csv"
    pd.DataFrame({"id": ["tx-1", "tx-2"], "label": [1, None]}).to_csv(blank, index=False)
    result = model_cli("feedback", str(blank))
    assert result.code == 2
    assert "id 'tx-2': the label nan" in result.err
    assert stored(home_with_model) == []


@pytest.mark.parametrize(
    ("columns", "options", "message"),
    [
        ({"id": ["a"], "y": [1]}, [], "has no column 'label' (its columns: id, y)"),
        ({"tx": ["a"], "y": [1]}, [], "has no column 'id' or 'label'"),
        ({"id": ["a"], "y": [1]}, ["--label-column", "truth"], "has no column 'truth'"),
        ({"id": ["a", None], "label": [1, 0]}, [], "row 2 has no 'id'"),
        ({"id": [], "label": []}, [], "has no rows"),
    ],
)
def test_a_file_without_the_columns_is_refused_naming_them(
    model_cli: Cli,
    tmp_path: Path,
    columns: dict[str, list[object]],
    options: list[str],
    message: str,
) -> None:
    table = tmp_path / "labels.csv"
    pd.DataFrame(columns).to_csv(table, index=False)
    result = model_cli("feedback", str(table), *options)
    assert result.code == 2
    assert message in result.err


def test_the_model_must_be_named_when_the_home_has_several(
    model_cli: Cli, home_with_model: Path, tmp_path: Path
) -> None:
    with Registry.open(Settings(home=home_with_model)) as registry:
        registry.register_version(
            "other",
            files={"model.onnx": b"x"},
            format="onnx",
            input_schema={"features": ["a"]},
            output_schema={"task": "regression", "outputs": []},
            metrics={},
        )
    table = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["a"], "label": [2.5]}).to_csv(table, index=False)
    result = model_cli("feedback", str(table))
    assert result.code == 2
    assert "this home has 2 models (fraud, other); say which with --model NAME" in result.err
    assert model_cli("feedback", str(table), "--model", "other").code == 0
    assert stored(home_with_model, "other") == [("a", "2.5", "file")]
    result = model_cli("feedback", str(table), "--model", "nope")
    assert result.code == 3
    assert "no model named 'nope'" in result.err


def test_an_empty_home_has_no_model_to_label(cli: Cli, tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["a"], "label": [1]}).to_csv(table, index=False)
    result = cli("feedback", str(table))
    assert result.code == 2
    assert "this home has no model" in result.err
    missing = cli("feedback", str(tmp_path / "none.csv"), "--model", "fraud")
    assert missing.code == 2
    assert "no such file" in missing.err


def test_numeric_looking_ids_keep_their_text(
    model_cli: Cli, home_with_model: Path, tmp_path: Path
) -> None:
    """An id column read from CSV stays text: "007" is the id a client sent, not 7."""
    table = tmp_path / "labels.csv"
    table.write_text("id,label\n007,1\n12,0\n")
    result = model_cli("feedback", str(table), "--model", "fraud")
    assert result.code == 0, result.err
    assert [row[0] for row in stored(home_with_model)] == ["007", "12"]

from pathlib import Path

import pandas as pd
import pytest

from shipyard.cli.predict import BATCH_ROWS
from shipyard.inference.batch import DEFAULT_BATCH_ROWS
from shipyard.registry import Registry
from shipyard.settings import Settings


@pytest.fixture
def new_data(model_cli, tmp_path: Path) -> Path:
    path = tmp_path / "new.csv"
    assert (
        model_cli(
            "data", "generate", "fraud", "--rows", "3000", "--seed", "5", "-o", str(path)
        ).code
        == 0
    )
    return path


def test_predict_writes_probability_and_label_per_row(
    model_cli, new_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scored.parquet"
    result = model_cli(
        "predict",
        "fraud@production",
        "--input",
        str(new_data),
        "-o",
        str(out),
        "--batch-rows",
        "1000",
    )
    assert result.code == 0, result.err
    assert "wrote 3,000 predictions" in result.out
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["Class", "probability", "label"]
    assert scored["probability"].between(0, 1).all()
    assert set(scored["label"].unique()) <= {0, 1}


def test_predict_missing_column(model_cli, new_data: Path, tmp_path: Path) -> None:
    pd.read_csv(new_data).drop(columns=["V3", "Amount"]).to_csv(new_data, index=False)
    result = model_cli("predict", "fraud", "--input", str(new_data), "-o", str(tmp_path / "o.csv"))
    assert result.code == 2
    assert "V3" in result.err
    assert "Amount" in result.err
    assert not (tmp_path / "o.csv").exists()


def test_the_default_batch_is_the_scorers() -> None:
    assert BATCH_ROWS == DEFAULT_BATCH_ROWS


@pytest.mark.parametrize(
    ("suffix", "where"),
    [(".csv", "row 18 (line 19)"), (".jsonl", "row 18 (line 18)"), (".parquet", "row 18")],
)
def test_a_value_that_is_no_number_is_named_with_column_and_row(
    model_cli, new_data: Path, tmp_path: Path, suffix: str, where: str
) -> None:
    frame = pd.read_csv(new_data)
    frame[["Amount", "V4"]] = frame[["Amount", "V4"]].astype(object)
    frame.loc[17, "Amount"] = "12,50 EUR"
    frame.loc[30, "V4"] = "n/a"  # a later row: the first in the file is named
    bad = tmp_path / f"bad{suffix}"
    if suffix == ".csv":
        frame.to_csv(bad, index=False)
    elif suffix == ".jsonl":
        frame.to_json(bad, orient="records", lines=True)
    else:
        frame[["Amount", "V4"]] = frame[["Amount", "V4"]].astype(str)
        frame.to_parquet(bad, index=False)
    result = model_cli("predict", "fraud", "--input", str(bad), "-o", str(tmp_path / "o.csv"))
    assert result.code == 2
    assert f"feature 'Amount' in {where} must be a number, got '12,50 EUR'" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "o.csv").exists()


def test_numbers_written_as_text_are_scored(model_cli, new_data: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(new_data)
    frame["Amount"] = frame["Amount"].map(lambda v: f"{v:.2f}")
    quoted = tmp_path / "quoted.jsonl"
    frame.to_json(quoted, orient="records", lines=True)
    result = model_cli("predict", "fraud", "--input", str(quoted), "-o", str(tmp_path / "o.csv"))
    assert result.code == 0, result.err


def test_predict_unknown_alias(model_cli, new_data: Path, tmp_path: Path) -> None:
    result = model_cli(
        "predict", "fraud@staging", "--input", str(new_data), "-o", str(tmp_path / "o.csv")
    )
    assert result.code == 3
    assert "promote" in result.err


def _blob_of(home: Path, digest: str) -> Path:
    matches = list((home / "artifacts").rglob(digest))
    assert len(matches) == 1
    return matches[0]


def test_tampered_artifact_is_refused(
    model_cli, home_with_model: Path, new_data: Path, tmp_path: Path
) -> None:
    with Registry.open(Settings(home=home_with_model)) as registry:
        artifact = registry.load_artifact("fraud:1")
    blob = _blob_of(home_with_model, artifact.manifest.files["model.onnx"].sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    result = model_cli(
        "predict", "fraud:1", "--input", str(new_data), "-o", str(tmp_path / "o.csv")
    )
    assert result.code == 5
    assert "model.onnx" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "o.csv").exists()


def test_untrusted_signer_is_refused(
    model_cli, home_with_model: Path, new_data: Path, tmp_path: Path
) -> None:
    for pub in (home_with_model / "keys").glob("*.pub"):
        pub.unlink()
    result = model_cli(
        "predict", "fraud:1", "--input", str(new_data), "-o", str(tmp_path / "o.csv")
    )
    assert result.code == 5
    assert "trusted" in result.err

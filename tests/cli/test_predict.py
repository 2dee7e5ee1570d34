import functools
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import shipyard.cluster
from shipyard.cli.predict import BATCH_ROWS, PARTITION_ROWS
from shipyard.cluster import open_cluster
from shipyard.cluster.scoring import DEFAULT_PARTITION_ROWS
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


def test_the_defaults_are_the_scorers() -> None:
    assert BATCH_ROWS == DEFAULT_BATCH_ROWS
    assert PARTITION_ROWS == DEFAULT_PARTITION_ROWS


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


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a local cluster of 2 worker processes, shared by the module's tests."""
    with open_cluster(workers=2) as client:
        yield client.scheduler.address


def test_on_a_cluster_the_output_is_the_in_process_output(
    model_cli, new_data: Path, tmp_path: Path, scheduler: str
) -> None:
    here, there = tmp_path / "here.csv", tmp_path / "there.csv"
    assert model_cli("predict", "fraud", "-i", str(new_data), "-o", str(here)).code == 0
    result = model_cli(
        "predict", "fraud", "-i", str(new_data), "-o", str(there),
        "--scheduler", scheduler, "--partition-rows", "200",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "wrote 3,000 predictions" in result.out
    assert there.read_bytes() == here.read_bytes()


def test_workers_start_a_local_cluster(model_cli, new_data: Path, tmp_path: Path) -> None:
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    assert model_cli("predict", "fraud", "-i", str(new_data), "-o", str(here)).code == 0
    result = model_cli("predict", "fraud", "-i", str(new_data), "-o", str(there), "--workers", "1")
    assert result.code == 0, result.err
    pd.testing.assert_frame_equal(pd.read_parquet(there), pd.read_parquet(here))


def test_on_a_cluster_a_bad_value_is_named_as_in_process(
    model_cli, new_data: Path, tmp_path: Path, scheduler: str
) -> None:
    frame = pd.read_csv(new_data)
    frame["V7"] = frame["V7"].astype(object)
    frame.loc[2345, "V7"] = "?"
    frame.to_csv(new_data, index=False)
    output = tmp_path / "o.csv"
    here = model_cli("predict", "fraud", "-i", str(new_data), "-o", str(output))
    there = model_cli(
        "predict", "fraud", "-i", str(new_data), "-o", str(output),
        "--scheduler", scheduler, "--partition-rows", "200",
    )  # fmt: skip
    assert (here.code, there.code) == (2, 2)
    assert "feature 'V7' in row 2346 (line 2347) must be a number, got '?'" in there.err
    assert there.err == here.err
    assert not output.exists()


def test_on_a_cluster_missing_columns_are_named(
    model_cli, new_data: Path, tmp_path: Path, scheduler: str
) -> None:
    pd.read_csv(new_data).drop(columns=["V3", "Amount"]).to_csv(new_data, index=False)
    result = model_cli(
        "predict", "fraud", "-i", str(new_data), "-o", str(tmp_path / "o.csv"),
        "--scheduler", scheduler,
    )  # fmt: skip
    assert result.code == 2
    assert "lacks 2 feature column(s) of fraud:1: V3, Amount" in result.err


def test_an_unreachable_scheduler_exits_6(
    model_cli, new_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real client, with a shorter wait than its default 10 s.
    monkeypatch.setattr(
        shipyard.cluster, "open_cluster", functools.partial(open_cluster, connect_timeout_s=1)
    )
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    result = model_cli(
        "predict", "fraud", "-i", str(new_data), "-o", str(tmp_path / "o.csv"),
        "--scheduler", address,
    )  # fmt: skip
    assert result.code == 6
    assert f"cannot reach the Dask scheduler at {address}" in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "o.csv").exists()


def test_a_scheduler_and_workers_together_are_refused(
    model_cli, new_data: Path, tmp_path: Path
) -> None:
    result = model_cli(
        "predict", "fraud", "-i", str(new_data), "-o", str(tmp_path / "o.csv"),
        "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2",
    )  # fmt: skip
    assert result.code == 2
    assert "give one of them" in result.err

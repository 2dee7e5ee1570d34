from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import pytest

from shipyard.data import FRAUD_SCHEMA, file_sha256, generate_fraud, read_table, write_table
from shipyard.errors import InvalidInputError, SchemaError


@pytest.fixture
def fraud() -> pd.DataFrame:
    return generate_fraud(500, seed=1, fraud_rate=0.02)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".jsonl", ".ndjson"])
def test_round_trip_with_schema(tmp_path: Path, fraud: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / "nested" / "folder" / f"fraud{suffix}"
    write_table(fraud, path)
    assert path.is_file()
    assert list(path.parent.iterdir()) == [path]
    result = read_table(path, FRAUD_SCHEMA)
    pd.testing.assert_frame_equal(result, fraud)


def test_read_without_schema_returns_the_file_as_is(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n")
    assert read_table(path).to_dict("list") == {"a": [1], "b": ["x"]}


def test_read_features_only(tmp_path: Path, fraud: pd.DataFrame) -> None:
    path = tmp_path / "live.parquet"
    write_table(fraud.drop(columns="Class"), path)
    result = read_table(path, FRAUD_SCHEMA, require_target=False)
    assert list(result.columns) == FRAUD_SCHEMA.feature_names
    with pytest.raises(SchemaError, match="missing column 'Class'"):
        read_table(path, FRAUD_SCHEMA)


def test_schema_errors_come_through(tmp_path: Path, fraud: pd.DataFrame) -> None:
    frame = fraud.astype({"Amount": object})
    frame.loc[17, "Amount"] = "abc"
    path = tmp_path / "bad.csv"
    write_table(frame, path)
    with pytest.raises(
        SchemaError, match=r"'Amount' must be float64 but has text .*'abc' at row 17"
    ):
        read_table(path, FRAUD_SCHEMA)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(InvalidInputError, match=re.escape(f"no such file: {path}")):
        read_table(path)


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(InvalidInputError) as caught:
        read_table(path)
    message = str(caught.value)
    assert "unsupported file type '.xlsx'" in message
    assert ".csv, .parquet, .pq" in message


def test_write_unknown_suffix(tmp_path: Path, fraud: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match=r"unsupported file type '\.json'"):
        write_table(fraud, tmp_path / "t.json")
    assert not list(tmp_path.iterdir())


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(InvalidInputError) as caught:
        read_table(path)
    message = str(caught.value)
    assert f"cannot read {path} as Parquet" in message
    assert "Parquet" in message.split(":", 1)[1]


def test_truncated_parquet(tmp_path: Path, fraud: pd.DataFrame) -> None:
    path = tmp_path / "cut.parquet"
    write_table(fraud, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvalidInputError, match=re.escape(f"cannot read {path} as Parquet")):
        read_table(path)


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(
        InvalidInputError, match=re.escape(f"cannot read {path} as CSV: No columns to parse")
    ):
        read_table(path)


def test_malformed_csv(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(
        InvalidInputError, match=re.escape(f"cannot read {path} as CSV: Error tokenizing")
    ):
        read_table(path)


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.csv"
    path.mkdir()
    with pytest.raises(InvalidInputError, match="not a file"):
        read_table(path)


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_file_sha256_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        file_sha256(tmp_path / "nope")


def test_json_lines_keep_their_types(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "007", "x": 1.5}\n{"id": "008", "x": null}\n')
    frame = read_table(path)
    assert frame["id"].tolist() == ["007", "008"]
    assert frame["x"].iloc[0] == 1.5
    assert pd.isna(frame["x"].iloc[1])


def test_malformed_json_lines_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "1"}\n{not json\n')
    with pytest.raises(InvalidInputError, match=r"cannot read .*rows.jsonl as JSON Lines"):
        read_table(path)

"""Cutting a table file into partitions: every row read exactly once, in order, whatever the
cut; the ordered writer's output is ``write_table``'s."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shipyard.cluster.partitions import ordered_output, plan_file, read_part
from shipyard.data import read_table, write_table
from shipyard.errors import InvalidInputError


def frame(rows: int) -> pd.DataFrame:
    """Rows of very different lengths, so byte ranges cut lines anywhere."""
    return pd.DataFrame(
        {"id": [f"r{i}" + "x" * (i % 37) for i in range(rows)], "v": [i * 0.5 for i in range(rows)]}
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("partition_rows", [1, 3, 17, 1000])
def test_every_line_is_read_once_in_order(tmp_path: Path, suffix: str, partition_rows: int) -> None:
    path = tmp_path / f"t{suffix}"
    write_table(frame(200), path)
    plan = plan_file(path, partition_rows)
    assert plan.total == sum(part.size for part in plan.parts)
    parts = [read_part(part) for part in plan.parts]
    whole = pd.concat([p for p in parts if len(p)], ignore_index=True)
    pd.testing.assert_frame_equal(whole, read_table(path))
    assert plan.columns == ["id", "v"]


def test_a_last_line_without_a_line_break_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,v\na,1\nb,2\nc,3")
    rows = [read_part(part) for part in plan_file(path, 1).parts]
    assert pd.concat(rows)["id"].tolist() == ["a", "b", "c"]


def test_a_header_without_rows_is_one_empty_part(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,v\n")
    (part,) = plan_file(path, 10).parts
    assert read_part(part).columns.tolist() == ["id", "v"]


def test_parquet_parts_join_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    frame(1000).to_parquet(path, row_group_size=100, index=False)
    plan = plan_file(path, 250)  # three groups make a part; the last part has one
    assert [part.size for part in plan.parts] == [300, 300, 300, 100]
    whole = pd.concat([read_part(part) for part in plan.parts], ignore_index=True)
    pd.testing.assert_frame_equal(whole, read_table(path))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_ordered_output_is_write_tables(tmp_path: Path, suffix: str) -> None:
    table = frame(100)
    expected = tmp_path / f"expected{suffix}"
    write_table(table, expected)
    path = tmp_path / f"out{suffix}"
    with ordered_output(path) as writer:
        for start in range(0, 100, 30):
            writer.write(table.iloc[start : start + 30])
    assert writer.rows == 100
    if suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(path), table)
    else:
        assert path.read_bytes() == expected.read_bytes()


def _write(path: Path, *frames: pd.DataFrame, fail: bool = False) -> None:
    with ordered_output(path) as writer:
        for part in frames:
            writer.write(part)
        if fail:
            raise RuntimeError("stop")


def test_ordered_output_leaves_no_file_when_interrupted(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        _write(tmp_path / "out.csv", frame(3), fail=True)
    assert list(tmp_path.iterdir()) == []


def test_a_column_whose_type_cannot_follow_the_first_part_is_named(tmp_path: Path) -> None:
    first, then = pd.DataFrame({"v": [1, 2]}), pd.DataFrame({"v": ["a", "b"]})
    with pytest.raises(InvalidInputError, match="a column's type changes along the input"):
        _write(tmp_path / "out.parquet", first, then)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.csv", "no such file"),
        ("t.xlsx", "unsupported file type"),
        ("dir.csv", "not a file"),
    ],
)
def test_unusable_paths_are_refused(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "t.xlsx").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=message):
        plan_file(tmp_path / name, 10)

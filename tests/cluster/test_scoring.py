"""Scoring a file on a real local Dask cluster (2 worker processes, one per module): the same
output as in-process scoring, a worker SIGKILLed mid-way changes nothing, bad input is named
as in-process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from shipyard.cluster import open_cluster
from shipyard.cluster.partitions import plan_file
from shipyard.cluster.scoring import ModelFiles, score_file_on_cluster, worker_predictor
from shipyard.data import read_table, write_table
from shipyard.errors import ArtifactTamperedError, SchemaError
from shipyard.inference import ExportedModel, load_predictor
from shipyard.inference.batch import score_frame
from shipyard.registry import Registry, VerifiedArtifact
from shipyard.settings import Settings

FEATURES = ["a", "b", "c", "d"]  # those of the root conftest's exported_models
ROWS = 3000
PARTITION_ROWS = 100  # 30 partitions: a kill lands while most are still to score


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with open_cluster(workers=2) as opened:
        yield opened


@pytest.fixture(scope="module")
def artifact(
    tmp_path_factory: pytest.TempPathFactory, exported_models: list[ExportedModel]
) -> VerifiedArtifact:
    """Version 1 of ``m``, registered, signed and loaded back verified."""
    model = exported_models[0]
    home = tmp_path_factory.mktemp("scoring") / "home"
    with Registry.open(Settings(home=home)) as registry:
        registry.register_version(
            "m",
            files=model.files,
            format=model.format,
            input_schema=model.input_schema,
            output_schema=model.output_schema,
            metrics={"roc_auc": 0.9},
        )
        return registry.load_artifact("m:1")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Ids that must stay text and in order, the features, a label the model ignores."""
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(ROWS, 4)), columns=FEATURES)
    frame.insert(0, "id", [f"tx-{i:05d}" for i in rng.permutation(ROWS)])
    frame["outcome"] = rng.integers(0, 2, ROWS)
    return frame


def in_process(artifact: VerifiedArtifact, source: Path, output: Path) -> None:
    """What ``shipyard predict`` without a cluster writes."""
    write_table(score_frame(load_predictor(artifact), read_table(source)), output)


@pytest.mark.parametrize(("source", "target"), [(".csv", ".csv"), (".jsonl", ".jsonl")])
def test_text_files_give_the_same_bytes_as_in_process(
    client: Client,
    artifact: VerifiedArtifact,
    table: pd.DataFrame,
    tmp_path: Path,
    source: str,
    target: str,
) -> None:
    data = tmp_path / f"in{source}"
    write_table(table, data)
    expected, output = tmp_path / f"expected{target}", tmp_path / f"out{target}"
    in_process(artifact, data, expected)
    seen: list[int] = []
    rows = score_file_on_cluster(
        client,
        artifact,
        data,
        output,
        partition_rows=PARTITION_ROWS,
        progress=lambda rows, size: seen.append(rows),
    )
    assert rows == ROWS
    assert len(seen) > 20  # scored in many partitions
    assert sum(seen) == ROWS
    assert output.read_bytes() == expected.read_bytes()


def test_parquet_row_groups_give_the_same_table_as_in_process(
    client: Client, artifact: VerifiedArtifact, table: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "in.parquet"
    table.to_parquet(data, row_group_size=250, index=False)
    expected, output = tmp_path / "expected.parquet", tmp_path / "out.parquet"
    in_process(artifact, data, expected)
    plan = plan_file(data, 500)
    assert [part.size for part in plan.parts] == [500] * 6
    assert plan.total == ROWS
    assert score_file_on_cluster(client, artifact, data, output, plan=plan) == ROWS
    pd.testing.assert_frame_equal(pd.read_parquet(output), pd.read_parquet(expected))
    # And to CSV: the same bytes.
    score_file_on_cluster(client, artifact, data, tmp_path / "out.csv", plan=plan)
    in_process(artifact, data, tmp_path / "expected.csv")
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()


def test_a_worker_killed_mid_way_changes_nothing(
    client: Client, artifact: VerifiedArtifact, table: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "in.csv"
    write_table(table, data)
    expected, output = tmp_path / "expected.csv", tmp_path / "out.csv"
    in_process(artifact, data, expected)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    done: list[int] = []
    killed_after: list[int] = []

    def kill_after_three_partitions(rows: int, size: int) -> None:
        done.append(rows)
        if len(done) == 3:
            os.kill(victim, signal.SIGKILL)  # later partitions are queued or running on it
            killed_after.append(sum(done))

    rows = score_file_on_cluster(
        client,
        artifact,
        data,
        output,
        partition_rows=PARTITION_ROWS,
        progress=kill_after_three_partitions,
    )
    assert killed_after
    assert killed_after[0] < ROWS // 4
    assert rows == ROWS
    assert output.read_bytes() == expected.read_bytes()
    # The nanny started a new worker process in place of the killed one.
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()


def test_the_first_bad_value_is_named_by_its_row_in_the_whole_file(
    client: Client, artifact: VerifiedArtifact, table: pd.DataFrame, tmp_path: Path
) -> None:
    frame = table.astype({"b": object, "d": object})
    frame.loc[2207, "d"] = "n/a"
    frame.loc[1733, "b"] = "12,50 EUR"  # in an earlier partition than row 2207's
    data = tmp_path / "bad.csv"
    write_table(frame, data)
    with pytest.raises(SchemaError) as caught:
        score_file_on_cluster(
            client, artifact, data, tmp_path / "out.csv", partition_rows=PARTITION_ROWS
        )
    assert str(caught.value) == (
        f"{data}: feature 'b' in row 1734 (line 1735) must be a number, got '12,50 EUR'; "
        "fix or drop that row"
    )
    assert list(tmp_path.iterdir()) == [data]  # no output, not even a partial one


def test_missing_feature_columns_are_named_before_any_task(
    client: Client, artifact: VerifiedArtifact, table: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "in.parquet"
    table.drop(columns=["b", "c"]).to_parquet(data)
    with pytest.raises(SchemaError, match=r"lacks 2 feature column\(s\) of m:1: b, c"):
        score_file_on_cluster(client, artifact, data, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_a_worker_refuses_files_that_do_not_match_their_digests(
    artifact: VerifiedArtifact,
) -> None:
    model = ModelFiles.of(artifact)
    name = next(iter(model.files))
    tampered = replace(
        model, digest="other", files={**model.files, name: model.files[name] + b"\0"}
    )
    with pytest.raises(ArtifactTamperedError, match=f"file {name} of m:1"):
        worker_predictor(tampered)
    assert worker_predictor(model) is worker_predictor(model)  # built once per process

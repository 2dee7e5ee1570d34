"""``shipyard runs list`` and ``shipyard runs show``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cli.conftest import Cli
from shipyard.registry import Registry
from shipyard.settings import Settings


def only_run(home: Path) -> str:
    with Registry.open(Settings(home=home)) as registry:
        (run,) = registry.runs.recent()
        return run.id


def test_list_shows_each_run_with_its_version(model_cli: Cli, home_with_model: Path) -> None:
    run_id = only_run(home_with_model)
    result = model_cli("runs", "list")
    assert result.code == 0, result.err
    for text in ("id", "spec", "status", "started", "duration", "version"):
        assert text in result.out
    line = next(line for line in result.out.splitlines() if run_id in line)
    assert "fraud" in line
    assert "succeeded" in line
    assert "fraud:1" in line
    assert " s " in line  # its duration

    assert run_id in model_cli("runs", "list", "--spec", "fraud", "--limit", "1").out
    empty = model_cli("runs", "list", "--spec", "housing")
    assert empty.code == 0
    assert "no runs of 'housing' yet" in empty.out


def test_show_gives_stages_metrics_version_and_data(model_cli: Cli, home_with_model: Path) -> None:
    run_id = only_run(home_with_model)
    result = model_cli("runs", "show", run_id)
    assert result.code == 0, result.err
    out = result.out
    assert f"run {run_id}" in out
    assert "fraud:1" in out
    assert "train.parquet" in out  # the data it trained on
    for stage in ("ingest", "validate", "split", "train", "evaluate", "export", "register"):
        assert stage in out
    assert "average_precision" in out
    assert "learners" not in out


def test_show_names_a_failure_and_an_ensembles_learners(
    model_cli: Cli, home_with_model: Path
) -> None:
    with Registry.open(Settings(home=home_with_model)) as registry:
        run_id = registry.runs.start("bagged", "name: bagged", {"data": {"path": "/x.csv"}})
        registry.runs.record_stage(run_id, "ingest", "succeeded", datetime.now(UTC), 0.5)
        registry.runs.log_metrics(run_id, {"learners": 6, "learners_failed": 2})
        registry.runs.finish(run_id, "failed", "train: ClusterError: only 6 of 8 learners")
    result = model_cli("runs", "show", run_id)
    assert result.code == 0, result.err
    assert "learners: 6 done, 2 failed" in result.out
    assert "train: ClusterError: only 6 of 8 learners" in result.out
    assert "failed" in result.out


def test_an_unknown_run_exits_3_saying_so(model_cli: Cli) -> None:
    result = model_cli("runs", "show", "nope")
    assert result.code == 3
    assert "no run with id 'nope'" in result.err


def test_show_names_the_worker_and_attempts_of_each_stage(cli: Cli, home: Path) -> None:
    with Registry.open(Settings(home=home)) as registry:
        run_id = registry.runs.start("fraud", "name: fraud", {}, status="queued")
        first = registry.runs.claim_stage(run_id, "ingest", "host-a:12", 30)
        assert first.stage_id is not None
        registry.runs.release_stage(first.stage_id, "host-a:12")
        again = registry.runs.claim_stage(run_id, "ingest", "host-b:34", 30)
        assert again.stage_id is not None
        registry.runs.end_stage(again.stage_id, "host-b:34", "succeeded", 0.5)
        registry.runs.claim_stage(run_id, "validate", "host-b:34", 30)
    result = cli("runs", "show", run_id)
    assert result.code == 0, result.err
    assert "running" in result.out
    for text in ("worker", "attempts", "host-b:34"):
        assert text in result.out
    ingest = next(line for line in result.out.splitlines() if "ingest" in line)
    assert "succeeded" in ingest
    assert "2" in ingest.split("host-b:34")[1]

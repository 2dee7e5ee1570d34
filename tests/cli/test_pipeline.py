import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dask_processes import dask_cluster, houses_spec, learners_stored
from shipyard.data import get_dataset
from shipyard.examples import example_spec
from shipyard.inference.predictor import load_predictor
from shipyard.registry import Registry
from shipyard.settings import Settings


def _versions(home: Path) -> list[tuple[int, list[str]]]:
    with Registry.open(Settings(home=home)) as registry:
        return [(v.version, v.aliases) for v in registry.list_versions("fraud")]


def test_run_registers_and_promotes_the_first_version(cli, home: Path, tmp_path: Path) -> None:
    data = tmp_path / "f.csv"
    assert cli("data", "generate", "fraud", "--rows", "4000", "-o", str(data)).code == 0
    result = cli("pipeline", "run", str(example_spec("fraud")), "--data", str(data))
    assert result.code == 0, result.err
    assert "fraud:1" in result.out
    assert "promoted to production" in result.out
    for stage in ("ingest", "validate", "split", "train", "evaluate", "export", "register"):
        assert stage in result.out
    assert _versions(home) == [(1, ["production"])]


def test_second_run_registers_a_new_version(
    model_cli, home_with_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "g.parquet"
    assert (
        model_cli(
            "data", "generate", "fraud", "--rows", "6000", "--seed", "3", "-o", str(data)
        ).code
        == 0
    )
    result = model_cli("pipeline", "run", str(example_spec("fraud")), "--data", str(data))
    assert result.code == 0, result.err
    assert "fraud:2" in result.out
    # Same data, same model: not strictly better, so production stays on v1.
    assert "not promoted" in result.out
    assert _versions(home_with_model) == [(1, ["production"]), (2, [])]


def test_bad_spec_fails_cleanly_and_changes_nothing(
    model_cli, home_with_model: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(example_spec("fraud").read_text().replace("max_iter", "max_iterations"))
    before = _versions(home_with_model)
    result = model_cli("pipeline", "run", str(spec))
    assert result.code == 2
    assert "max_iterations" in result.err
    assert "Traceback" not in result.err
    assert _versions(home_with_model) == before


def test_data_with_a_missing_column_names_it(
    model_cli, home_with_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "f.csv"
    assert model_cli("data", "generate", "fraud", "--rows", "500", "-o", str(data)).code == 0
    pd.read_csv(data).drop(columns=["V7"]).to_csv(data, index=False)
    before = _versions(home_with_model)
    result = model_cli("pipeline", "run", str(example_spec("fraud")), "--data", str(data))
    assert result.code == 2
    assert "V7" in result.err
    assert _versions(home_with_model) == before


def test_wrong_dtype_is_named_with_value_and_row(model_cli, tmp_path: Path) -> None:
    data = tmp_path / "f.csv"
    assert model_cli("data", "generate", "fraud", "--rows", "500", "-o", str(data)).code == 0
    frame = pd.read_csv(data)
    frame["Amount"] = frame["Amount"].astype(object)
    frame.loc[17, "Amount"] = "abc"
    frame.to_csv(data, index=False)
    result = model_cli("pipeline", "run", str(example_spec("fraud")), "--data", str(data))
    assert result.code == 2
    assert "Amount" in result.err
    assert "abc" in result.err


def test_missing_spec_file(cli, tmp_path: Path) -> None:
    result = cli("pipeline", "run", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert f"no spec file at {tmp_path / 'nope.yaml'}" in result.err
    assert "shipyard examples list" in result.err


def test_a_packaged_example_runs_by_name_from_any_folder(
    cli, home: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("data", "generate", "fraud", "--rows", "3000", "-o", "f.csv").code == 0
    result = cli("pipeline", "run", "fraud", "--data", "f.csv")
    assert result.code == 0, result.err
    assert "fraud:1" in result.out
    assert _versions(home) == [(1, ["production"])]


def test_an_unknown_spec_name_lists_the_examples(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("pipeline", "run", "frod")
    assert result.code == 2
    assert "no packaged example of that name; examples: cifar, digits, fraud" in result.err


def test_a_spec_with_columns_and_no_path_reads_the_data_option(cli, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    assert cli("data", "generate", "fraud", "--rows", "2000", "-o", str(rows)).code == 0
    frame = pd.read_csv(rows)
    columns = "\n".join(
        f"    - {{name: {c}, dtype: {'int64' if c == 'Class' else 'float64'}}}"
        for c in frame.columns
    )
    spec = tmp_path / "columns.yaml"
    spec.write_text(
        f"name: cols\ndata:\n  target: Class\n  columns:\n{columns}\n"
        "model: {name: cols, type: LogisticRegression, params: {max_iter: 200}}\n"
    )
    assert cli("pipeline", "run", str(spec)).code == 2
    result = cli("pipeline", "run", str(spec), "--data", str(rows))
    assert result.code == 0, result.err
    assert "cols:1" in result.out


def test_resume_carries_on_a_failed_run_under_its_id(cli, home: Path, tmp_path: Path) -> None:
    good = tmp_path / "f.csv"
    assert cli("data", "generate", "fraud", "--rows", "3000", "-o", str(good)).code == 0
    broken = tmp_path / "broken.csv"
    broken.write_text("not,the,columns\n1,2,3\n")
    spec = str(example_spec("fraud"))
    failed = cli("pipeline", "run", spec, "--data", str(broken))
    assert failed.code == 2
    with Registry.open(Settings(home=home)) as registry:
        (run,) = registry.runs.recent()
    assert run.status == "failed"
    resumed = cli("pipeline", "run", spec, "--data", str(good), "--resume", run.id)
    assert resumed.code == 0, resumed.err
    assert f"run {run.id}" in resumed.out
    with Registry.open(Settings(home=home)) as registry:
        after = registry.runs.get(run.id)
        assert registry.get_version("fraud:1").run_id == run.id
    assert after.status == "succeeded"
    assert [s.status for s in after.stages][:2] == ["succeeded", "failed"]  # the first attempt
    again = cli("pipeline", "run", spec, "--data", str(good), "--resume", run.id)
    assert again.code == 4
    assert "succeeded; only a queued or failed run" in again.err
    assert _versions(home) == [(1, ["production"])]


def test_resume_refuses_another_specs_run_and_an_unknown_id(
    cli, home: Path, tmp_path: Path
) -> None:
    with Registry.open(Settings(home=home)) as registry:
        other = registry.runs.start("housing", "", {}, status="queued")
    spec = str(example_spec("fraud"))
    mixed = cli("pipeline", "run", spec, "--resume", other)
    assert mixed.code == 2
    assert "ran spec 'housing', not 'fraud'" in mixed.err
    unknown = cli("pipeline", "run", spec, "--resume", "nosuchrun")
    assert unknown.code == 3
    assert "no run with id 'nosuchrun'" in unknown.err
    with Registry.open(Settings(home=home)) as registry:
        assert registry.runs.get(other).status == "queued"


# -- an ensemble on a real Dask cluster whose scheduler is killed -------------------------

ENSEMBLE_SPEC = houses_spec(
    rows=12000, data_seed=5, learners=16, features=6, seed=2, metrics="r2, rmse, mae"
)
LEARNERS = 16


def _shipyard(home: Path, folder: Path, *args: str) -> subprocess.Popen[bytes]:
    with (folder / "out.log").open("wb") as out, (folder / "err.log").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "shipyard", "--home", str(home), *args],
            stdout=out,
            stderr=err,
            cwd=folder,
        )


def _house_prices(registry: Registry, ref: str) -> np.ndarray:
    dataset = get_dataset("housing")
    rows = dataset.generate(1000, 42)[dataset.schema.feature_names].to_numpy(np.float32)
    return load_predictor(registry.load_artifact(ref)).predict(rows)["prediction"]


def test_a_killed_scheduler_fails_the_run_cleanly_and_resume_fits_only_what_is_missing(
    home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "houses.yaml"
    spec.write_text(ENSEMBLE_SPEC)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with Registry.open(Settings(home=home)) as registry:  # migrated before the child opens it
        with dask_cluster(first, "a") as cluster:
            address, scheduler = cluster.address, cluster.scheduler
            command = _shipyard(home, first, "pipeline", "run", str(spec), "--scheduler", address)
            deadline = time.monotonic() + 120
            # Killed as soon as the first learner is stored: on a busy machine, waiting for a
            # few more let all of them finish before the kill.
            while learners_stored(registry) < 1 and time.monotonic() < deadline:
                assert command.poll() is None, (first / "err.log").read_text()
                time.sleep(0.01)
            scheduler.kill()
            code = command.wait(timeout=120)
        kept = learners_stored(registry)  # a result on its way as the scheduler died counts
        assert 1 <= kept < LEARNERS
        err = (first / "err.log").read_text()
        assert code == 6, err
        (run,) = registry.runs.recent()
        assert f"error: lost the Dask scheduler at {address} while fitting learners" in err
        assert f"--resume {run.id}` fits only the {LEARNERS - kept} learners it lacks" in err
        assert "Traceback" not in err
        assert run.status == "failed"
        assert run.error is not None
        assert run.error.startswith("train: ClusterError: lost the Dask scheduler")
        assert registry.list_models() == []

        with dask_cluster(second, "b") as cluster:
            address = cluster.address
            resume = ["pipeline", "run", str(spec), "--scheduler", address, "--resume", run.id]
            assert _shipyard(home, second, *resume).wait(timeout=180) == 0, (
                second / "err.log"
            ).read_text()
            assert (
                f"{LEARNERS} fitted, {kept} kept from the failed attempt"
                in (second / "out.log").read_text()
            )
            fresh = _shipyard(home, second, "pipeline", "run", str(spec), "--scheduler", address)
            assert fresh.wait(timeout=180) == 0, (second / "err.log").read_text()
        resumed = registry.runs.get(run.id)
        assert resumed.status == "succeeded"
        assert resumed.metrics["learners"] == LEARNERS
        assert resumed.metrics["learners_resumed"] == kept
        assert resumed.params["cluster"] == f"2 workers at {address}"
        assert registry.get_version("houses:1").run_id == run.id
        undisturbed = registry.runs.get(registry.get_version("houses:2").run_id or "")
        assert undisturbed.metrics["learners_resumed"] == 0
        assert np.array_equal(
            _house_prices(registry, "houses:1"), _house_prices(registry, "houses:2")
        )


def test_an_ensemble_runs_on_a_local_cluster_of_the_workers_asked_for(
    cli, home: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "houses.yaml"
    spec.write_text(
        ENSEMBLE_SPEC.replace("rows: 12000", "rows: 1500").replace("learners: 16", "learners: 4")
    )
    result = cli("pipeline", "run", str(spec), "--workers", "1")
    assert result.code == 0, result.err
    assert "learners: 4 fitted" in result.out
    assert "houses:1" in result.out
    with Registry.open(Settings(home=home)) as registry:
        (run,) = registry.runs.recent()
    assert run.params["cluster"].startswith("1 workers at tcp://127.0.0.1:")
    assert run.params["ensemble"]["learners"] == 4
    assert run.metrics["learners"] == 4


SUBMITTED_SPEC = """\
name: fraud
data:
  generate: {dataset: fraud, rows: 2000, seed: 7}
  dataset: fraud
  target: Class
task: classification
model: {name: fraud, type: HistGradientBoostingClassifier, params: {max_iter: 20}}
metrics: [average_precision]
"""


def test_submit_queues_the_run_and_prints_its_id(cli, home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SUBMITTED_SPEC)
    broker = "memory://cli-submit"
    result = cli("pipeline", "run", str(spec), "--submit", "--broker", broker)
    assert result.code == 0, result.err
    run_id = result.out.strip()
    assert "submitted to the stage workers" in result.err
    with Registry.open(Settings(home=home)) as registry:
        run = registry.runs.get(run_id)
    assert (run.status, run.spec_name, run.stages) == ("queued", "fraud", [])
    waited = cli("pipeline", "run", str(spec), "--submit", "--broker", broker, "--wait", "0")
    assert waited.code == 6
    assert "is still queued after 0 s; it goes on" in waited.err


def test_wait_and_broker_go_with_submit(cli, tmp_path: Path) -> None:
    result = cli("pipeline", "run", "fraud", "--wait", "5")
    assert result.code == 2
    assert "--wait and --broker go with --submit" in result.err
    result = cli("pipeline", "run", "fraud", "--submit", "--resume", "abc")
    assert result.code == 2
    assert "leave it out with --submit" in result.err

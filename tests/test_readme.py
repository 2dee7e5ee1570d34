"""Every command in the README runs as written (DESIGN rule 10)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

import shipyard
from debian_packages import require_tools
from shipyard.children import stop_pid
from shipyard.registry import Registry
from shipyard.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
INSTALL_AND_DEMO, CHECK, USAGE, SERVING = (
    BLOCKS[0].strip(),
    BLOCKS[1].strip(),
    BLOCKS[2],
    BLOCKS[3],
)
BIN = Path(sys.executable).parent


def _block_under(heading: str) -> str:
    """The first bash block of the README section under ``heading``."""
    section = README.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]


TRAINING = _block_under("## Training and evaluating over HTTP")
CLUSTER = _block_under("## Training on a cluster")
STREAMING = _block_under("## Streaming")
MONITORING = _block_under("## Monitoring")
RETRAINING = _block_under("## Retraining")
DASHBOARD = _block_under("## Dashboard")
TRAFFIC = _block_under("## Simulated users")
DEPLOY = _block_under("## Prometheus and Grafana")
CONTAINERS = _block_under("## Containers")
BALANCERS = _block_under("## Replicas behind nginx")
IMAGES = _block_under("## Image models")
USAGE_LINES = USAGE.strip().splitlines()
# Up to the first training run: a fresh folder then has the example files and fraud@production.
TRAIN = USAGE_LINES[: next(i for i, line in enumerate(USAGE_LINES) if " pipeline run " in line) + 1]


def test_readme_starts_with_the_two_commands() -> None:
    assert len(BLOCKS[0].strip().splitlines()) == 1
    assert len(BLOCKS[1].strip().splitlines()) == 1
    assert INSTALL_AND_DEMO.endswith("shipyard demo")
    assert "pytest" in CHECK
    assert "mypy" in CHECK
    assert "ruff check" in CHECK


def test_ci_runs_exactly_the_check_command() -> None:
    script = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert script[-1] == CHECK


def _run(command: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run a command in its own process group; past ``timeout`` the whole group is killed
    (what it started there, servers and scorers too, goes with it; the embedded broker, in
    a session of its own, stops with its last user) and the test fails with what the
    command had printed, so a hang shows where it was."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The leader is not reaped before both signals, so its group id cannot be reused.
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            time.sleep(grace)
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"{command!r} did not end within {timeout:g} s:\n{stdout}\n{stderr}")
    assert process.returncode == 0, f"{command!r} exited {process.returncode}:\n{stdout}\n{stderr}"
    return stdout


def test_a_command_past_its_timeout_fails_with_its_output_and_its_group_killed(
    tmp_path: Path,
) -> None:
    script = "echo started; sleep 300 & echo $! > pid; wait"
    with pytest.raises(pytest.fail.Exception, match=r"did not end within 1 s:\nstarted"):
        _run(script, tmp_path, _clean_env(), timeout=1)
    sleeper = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(sleeper) and time.monotonic() < deadline:
        try:
            if psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        assert not psutil.pid_exists(sleeper), "the command's background child outlived it"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(BIN))
    )
    env["COLUMNS"] = "160"
    env.update(extra)
    return env


def _block_env(folder: Path) -> dict[str, str]:
    """What a block's bash script runs with: the folder's home and the installed CLI first."""
    return _clean_env(SHIPYARD_HOME=str(folder / "home"), PATH=f"{BIN}{os.pathsep}/usr/bin:/bin")


class Folders:
    """The folders the README's blocks leave behind, each made once per module and restored
    in place for a test. In place because the registry records absolute paths (a run's
    training file, which retraining reads again): a copy elsewhere would point back here."""

    def __init__(self, root: Path) -> None:
        self.work = root / "work"
        self.saved = root / "saved"
        self.work.mkdir()

    def save(self, name: str) -> None:
        """Keep the working folder as it is now under ``name``."""
        shutil.copytree(self.work, self.saved / name, symlinks=True)

    def restore(self, name: str) -> Path:
        """The working folder as it was when ``name`` was saved."""
        shutil.rmtree(self.work)
        shutil.copytree(self.saved / name, self.work, symlinks=True)
        return self.work


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Folders:
    """One working folder for the module's end-to-end tests (they run one at a time)."""
    return Folders(tmp_path_factory.mktemp("readme"))


@pytest.fixture(scope="module")
def trained(folders: Folders) -> list[str]:
    """The usage block up to the first training run, each line through the installed console
    script, in an empty folder outside the repository and a fresh home, run once for every
    test that starts from a trained fraud@production; what each line printed. Saved as
    "trained"."""
    env = _clean_env(SHIPYARD_HOME=str(folders.work / "home"))
    outputs = []
    for line in TRAIN:
        args = shlex.split(line)
        assert args[0] == "shipyard"
        command = shlex.join([str(BIN / "shipyard"), *args[1:]])
        outputs.append(_run(command, folders.work, env, timeout=300))
    folders.save("trained")
    return outputs


@pytest.fixture(scope="module")
def monitored(folders: Folders, trained: list[str]) -> str:
    """The monitoring block as one bash script after the training, run once for the
    monitoring and the dashboard tests; what it printed. Saved as "monitored"."""
    work = folders.restore("trained")
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{MONITORING}"
    out = _run(script, work, _block_env(work), timeout=300)
    folders.save("monitored")
    return out


@pytest.mark.e2e
@pytest.mark.timeout(1500)  # a fresh venv's install, then the demo twice: its own bounds below
def test_install_and_demo_command_in_a_fresh_copy(tmp_path: Path) -> None:
    """The first command, verbatim, in a copy of the repository with no venv; then again."""
    copy = tmp_path / "shipyard"
    shutil.copytree(
        REPO,
        copy,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".shipyard", "*_cache", "__pycache__", "*.egg-info"
        ),
    )
    env = _clean_env()
    first = _run(INSTALL_AND_DEMO, copy, env, timeout=900)
    assert "registered" in first
    assert "fraud:1" in first
    assert "held-out average_precision" in first
    assert ", 0 errors;" in first
    assert "nothing lost" in first
    assert "0 failed requests of" in first  # the loop
    assert "production: v2 → v3" in first
    assert "rows/s, verifying, reading and writing included" in first  # batch scoring
    assert "champion vs challenger on the same 20,000 held-out rows" in first
    assert "\n  shipyard models show fraud\n" in first  # "Next" (tests/cli/test_demo.py)
    assert (copy / ".shipyard" / "registry.db").exists()
    # Each run registers three versions: trained, challenger, retrained in the loop.
    second = _run(
        ".venv/bin/shipyard demo --rows 20000 --holdout-rows 2000 --requests 400", copy, env, 600
    )
    assert "production: v5 → v6" in second


def test_usage_block_starts_with_the_examples_and_names_both_spec_forms() -> None:
    assert TRAIN[:3] == [
        "shipyard --version",
        "shipyard examples list",
        "shipyard examples copy fraud",
    ]
    assert "shipyard pipeline run examples/fraud/pipeline.yaml --data fraud.parquet" in TRAIN
    assert "shipyard pipeline run fraud --data fraud.parquet" in USAGE_LINES


@pytest.mark.e2e
def test_usage_commands_run_in_order(folders: Folders, trained: list[str]) -> None:
    """The usage block, each line through the installed console script, in an empty folder
    outside the repository and a fresh home: its first lines ran in ``trained``, the rest
    run here after them."""
    tmp_path = folders.restore("trained")
    env = _clean_env(SHIPYARD_HOME=str(tmp_path / "home"))
    outputs = list(trained)
    for line in USAGE_LINES[len(TRAIN) :]:
        args = shlex.split(line)
        assert args[0] == "shipyard"
        command = shlex.join([str(BIN / "shipyard"), *args[1:]])
        outputs.append(_run(command, tmp_path, env, timeout=300))
    assert len(outputs) == len(USAGE_LINES)
    assert outputs[0].strip() == f"shipyard {shipyard.__version__}"
    assert "fraud" in outputs[1]
    for name in ("pipeline.yaml", "request.json", "oip-request.json", "mlflow-request.json"):
        assert (tmp_path / "examples" / "fraud" / name).is_file()
    assert (tmp_path / "scored.csv").exists()
    # On a local cluster of 2 workers: the same bytes as in-process.
    assert (tmp_path / "scored-on-2-workers.csv").read_bytes() == (
        tmp_path / "scored.csv"
    ).read_bytes()
    assert (tmp_path / "other-keys" / "signing.pub").exists()


@pytest.mark.e2e
def test_serving_commands_run_as_a_script(folders: Folders, trained: list[str]) -> None:
    """The serving block, after the usage block, as one bash script; the server is stopped."""
    tmp_path = folders.restore("trained")  # the example's request files, fraud@production
    env = _block_env(tmp_path)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n{SERVING}"
    out = _run(script, tmp_path, env, timeout=300)
    assert '{"ready":true}' in out
    assert '{"name":"shipyard","version":"' in out
    assert '"models":["fraud"],"default_model":"fraud"' in out
    assert '"model":"fraud","version":1' in out
    assert '"model_name":"fraud","model_version":"1"' in out
    assert '{"predictions":[' in out
    assert '"token_type":"bearer"' in out


def _json_documents(text: str) -> list[dict[str, object]]:
    """The JSON objects in what a script printed (curl ends none of them with a newline)."""
    decoder, found, start = json.JSONDecoder(), [], text.find('{"')
    while start != -1:
        document, end = decoder.raw_decode(text, start)
        found.append(document)
        start = text.find('{"', end)
    return found


@pytest.mark.e2e
def test_training_over_http_commands_run_as_a_script(tmp_path: Path) -> None:
    """The training-over-HTTP block, in an empty folder and a fresh home, as one bash script:
    the housing ensemble fitted from an upload and followed to its version, evaluated on
    fresh labelled sales, asked for the example's prices, fitted again from the last run's
    spec and data (the same model), the runs listed and the last one shown."""
    env = _block_env(tmp_path)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{TRAINING}"
    out = _run(script, tmp_path, env, timeout=600)
    answers = _json_documents(out)
    first, evaluated, predicted, again = answers[1:]
    assert answers[0] == {"ready": True}
    assert (first["status"], first["version"]["ref"]) == ("succeeded", "housing:1"), first
    assert first["version"]["aliases"] == ["production"]
    assert [stage["status"] for stage in first["stages"]] == ["succeeded"] * 8
    assert first["learners"] == {"done": 32, "failed": 0}  # the example's ensemble, whole
    assert first["data"]["path"].endswith(f"uploads/{first['dataset_sha256']}.csv")
    assert first["metrics"]["r2"] > 0.8  # 0.88 on these 4,000 sales
    assert (evaluated["model"], evaluated["version"], evaluated["rows"]) == ("housing", 1, 2000)
    assert set(evaluated["metrics"]) == set(evaluated["recorded_metrics"]) == {"r2", "rmse", "mae"}
    assert evaluated["metrics"]["r2"] > 0.8  # on sales it never saw
    prices = [p["prediction"] for p in predicted["predictions"]]
    assert (predicted["version"], len(prices)) == (1, 2)
    assert all(20_000 < price < 2_000_000 for price in prices), prices
    assert (again["status"], again["version"]["ref"]) == ("succeeded", "housing:2"), again
    assert (again["data"], again["dataset_sha256"]) == (first["data"], first["dataset_sha256"])
    # The same spec, data and seeds give the same ensemble: the same figures, not promoted.
    assert again["metrics"] == first["metrics"]
    assert again["version"]["aliases"] == []
    listed = out[out.rindex("}") + 1 :]
    for run in (first, again):
        assert run["id"] in listed
    assert "housing:2" in listed
    assert "learners: 32 done, 0 failed" in listed  # shipyard runs show
    assert f"dataset sha256 │ {first['dataset_sha256']}" in listed


def test_the_ensemble_section_shown_is_the_housing_examples() -> None:
    """The `ensemble:` section the README explains key by key is the packaged example's, and
    names every key the spec accepts."""
    from shipyard.pipeline.spec import EnsembleSpec

    section = README.split("\n## Training on a cluster\n", 1)[1].split("\n## ", 1)[0]
    (shown,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    example = yaml.safe_load((REPO / "examples" / "housing" / "pipeline.yaml").read_text())
    assert yaml.safe_load(shown) == {"ensemble": example["ensemble"]}
    assert set(example["ensemble"]) == set(EnsembleSpec.model_fields)


@pytest.mark.e2e
def test_cluster_training_commands_run_as_a_script(tmp_path: Path) -> None:
    """The training-on-a-cluster block, in an empty folder and a fresh home, as one bash
    script: the housing ensemble on a local cluster of 2 workers, then on a scheduler and 2
    workers started by hand (stopped at the end) — every learner fitted both times, and the
    same model."""
    env = _block_env(tmp_path)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{CLUSTER}"
    out = _run(script, tmp_path, env, timeout=600)
    assert out.count("learners: 32 fitted\n") == 2, out
    r2 = [float(value) for value in re.findall(r"│ r2 +│ ([\d.]+)", out)]
    assert len(r2) == 2, out
    assert r2[0] == r2[1] > 0.8, r2  # the same model wherever it was fitted
    assert "not promoted to production (r2" in out
    with Registry.open(Settings(home=tmp_path / "home", database_url="")) as registry:
        local, remote = reversed(registry.runs.recent("housing"))
    assert local.params["cluster"].startswith("2 workers at tcp://127.0.0.1:")
    assert remote.params["cluster"] == "2 workers at tcp://127.0.0.1:8786"
    for run in (local, remote):
        assert run.status == "succeeded"
        assert (run.metrics["learners"], run.metrics["learners_failed"]) == (32, 0)
    listed = out[out.rindex("└") :]
    assert local.id in listed
    assert remote.id in listed


@pytest.mark.e2e
def test_streaming_commands_run_as_a_script(folders: Folders, trained: list[str]) -> None:
    """The streaming block, after the usage block's training, as one bash script on the
    embedded broker; the scorers are stopped at the end."""
    tmp_path = folders.restore("trained")  # a trained fraud@production
    env = _block_env(tmp_path)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{STREAMING}"
    _run(script, tmp_path, env, timeout=300)
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in results}) == 2000
    assert {r["model"] for r in results} == {"fraud"}
    assert {r["version"] for r in results} == {1}
    assert not (tmp_path / "home" / "nats" / "server.json").exists()  # the embedded server stopped


@pytest.mark.e2e
def test_monitoring_and_retraining_commands_run_as_scripts(
    folders: Folders, monitored: str
) -> None:
    """The monitoring block, after the usage block's training, as one bash script (run in
    ``monitored``): labels for an undrifted and a drifted set, the monitor's verdicts (the
    drift retrains the model: the example spec has a retrain: section), the report and the
    route; then the retraining block in the same folder."""
    tmp_path = folders.restore("monitored")
    env = _block_env(tmp_path)
    out = " ".join(monitored.split())
    assert "fraud: received 3,000 labels, accepted 3,000, 0 duplicates" in out
    passes = re.findall(
        r"fraud: ([\d,]+) new predictions, feedback settled: (.*?), events: (\S+)", out
    )
    assert passes == [
        ("3,000", "joined 3000", "none"),  # the undrifted set raised nothing
        ("3,000", "joined 3000", "drift.detected"),
    ]
    document = json.loads((tmp_path / "monitoring.json").read_text())
    assert document["model"] == "fraud"
    assert document["feedback"]["joined"] == 6000
    (version,) = document["versions"]
    snapshot = version["snapshot"]
    assert snapshot["dataset_drift"]["rows"] is True
    assert snapshot["performance"]["all"]["labelled"] == 6000
    loop = ("retrain.", "model.")
    assert [e["kind"] for e in version["events"] if not e["kind"].startswith(loop)] == [
        "drift.detected"
    ]
    # The second pass retrained on the drift: the outcome is printed, the decisions are events.
    (retrain,) = re.findall(r"fraud: retrain (promoted|lost): (.*?) min_delta 0\.01", out)
    assert "on the 1,800 newest labelled rows" in retrain[1]  # 30 % of 6,000

    script = f"set -euo pipefail\n{RETRAINING}"
    out = _run(script, tmp_path, env, timeout=300)
    assert "fraud: events" in out  # the table's title
    table = out[: out.index("[\n")]
    for kind in ("drift.detected", "retrain.triggered", "retrain.trained", "retrain.gated"):
        assert kind in table
    assert re.search(
        r"fraud: (promoted|lost) — fraud:\d+ (lost the gate|promoted to production)", out
    )
    gated = json.loads(out[out.index("[\n") :])
    assert [e["kind"] for e in gated] == ["retrain.gated", "retrain.gated"]
    assert all(
        e["evidence"]["holdout"]["note"].startswith("the newest labelled rows") for e in gated
    )


@pytest.mark.e2e
def test_dashboard_commands_run_as_a_script(folders: Folders, monitored: str) -> None:
    """The dashboard block, after the usage block's training and the monitoring block (run
    in ``monitored``), as one bash script: the page, a version's history, the drift event
    and the traffic."""
    tmp_path = folders.restore("monitored")
    env = _block_env(tmp_path)
    prelude = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
    out = _run(prelude + DASHBOARD, tmp_path, env, timeout=300)
    assert "<title>Shipyard dashboard</title>" in out
    history = json.loads((tmp_path / "history.json").read_text())
    assert (history["model"], history["version"]) == ("fraud", 1)
    # One point per `shipyard monitor --once` of the monitoring block, the drifted one last.
    assert [p["rows_seen"] for p in history["points"]] == [3000, 6000]
    assert [p["drift"]["rows"]["verdict"] for p in history["points"]] == [False, True]
    events = json.loads(out[out.index('{"model"') :].splitlines()[0])["events"]
    assert [e["kind"] for e in events] == ["drift.detected"]
    traffic = json.loads((tmp_path / "server-traffic.json").read_text())
    assert any(r["route"] == "/ui" for r in traffic["routes"])


@pytest.mark.e2e
def test_traffic_commands_run_as_a_script(folders: Folders, trained: list[str]) -> None:
    """The simulated-users block, after the usage block's training, as one bash script:
    a server, an operator key, a few seconds of labelled, drifting traffic, a monitor pass."""
    tmp_path = folders.restore("trained")  # a trained fraud@production
    env = _block_env(tmp_path)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{TRAFFIC}"
    out = " ".join(_run(script, tmp_path, env, timeout=300).split())
    summary = json.loads((tmp_path / "traffic.json").read_text())
    assert summary["requests"] > 100
    assert summary["errors"] == 0
    assert summary["versions"] == {"1": summary["requests"]}
    assert summary["labels_sent"] == summary["labels_chosen"] > 0
    assert abs(summary["label_rate"] - 0.3) < 0.1
    assert summary["drift"]["scenario"] == "many"
    assert summary["drift"]["requests_after"] > 0
    assert "wrote the summary to traffic.json" in out
    assert re.search(r"fraud: [\d,]+ new predictions, feedback settled: joined \d+", out), out


def test_deploy_commands_run_in_the_repository() -> None:
    """The Prometheus and Grafana block, in a clone's root, with Debian's promtool."""
    require_tools("prometheus", "promtool")
    assert DEPLOY.strip().splitlines()[0].startswith("promtool check config deploy/")
    out = _run(f"set -euo pipefail\n{DEPLOY}", REPO, _clean_env(), timeout=120)
    assert "is valid prometheus config file syntax" in out
    assert "SUCCESS: 12 rules found" in out  # the rule files the configuration loads
    assert "Unit Testing:  deploy/prometheus/tests/shipyard.yml\n  SUCCESS" in out


def test_containers_block_makes_every_secret_the_compose_file_names(tmp_path: Path) -> None:
    """The secrets block, in an empty folder: exactly the files deploy/compose.yaml's
    secrets and configs name, none empty, readable by the containers' users in a folder
    closed to others; one RabbitMQ password in both files, a signing key and its .pub."""
    from shipyard.registry.signing import Signer, TrustedKeys

    _run(f"set -euo pipefail\n{CONTAINERS}", tmp_path, _block_env(tmp_path), timeout=120)
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    named = {
        Path(e["file"]).name for kind in ("secrets", "configs") for e in compose[kind].values()
    }
    made = tmp_path / "deploy" / "secrets"
    assert {p.name for p in made.iterdir()} == named
    assert made.stat().st_mode & 0o777 == 0o700
    for path in made.iterdir():
        assert path.stat().st_size > 0, path.name
        assert path.stat().st_mode & 0o004, f"{path.name}: the containers' users cannot read it"
    broker = re.fullmatch(
        r"amqp://shipyard:(\w+)@rabbitmq:5672/", (made / "broker_url").read_text().strip()
    )
    assert broker is not None
    assert f"default_pass = {broker[1]}\n" in (made / "rabbitmq_user.conf").read_text()
    signer = Signer.load(made / "signing.key")
    TrustedKeys.load(made).verify(b"x", signer.sign(b"x"), signer.key_id)


@pytest.mark.e2e
def test_balancer_commands_run_as_a_script(folders: Folders, trained: list[str]) -> None:
    """The replicas-behind-nginx block, after the usage block's training, in a folder with
    the clone's deploy/ (as in a clone's root), with Debian's nginx: two replicas, two
    balancers, users with both addresses; then the primary stopped and the users on the
    backup. The balancers are stopped afterwards whatever the block did (they daemonize)."""
    nginx = Path(require_tools("nginx", "nginx")["nginx"])
    work = folders.restore("trained")
    (work / "deploy").symlink_to(REPO / "deploy")
    env = _block_env(work)
    env["PATH"] += os.pathsep + str(nginx.parent)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{BALANCERS}"
    try:
        _run(script, work, env, timeout=300)
    finally:
        for pid_file in (work / "run" / "nginx.pid", work / "backup" / "nginx.pid"):
            if pid_file.exists():
                stop_pid(int(pid_file.read_text()))
    balanced = json.loads((work / "balanced.json").read_text())
    assert balanced["errors"] == 0
    assert balanced["answered_by"] == {"http://127.0.0.1:8080": 400}
    failed_over = json.loads((work / "failed-over.json").read_text())
    assert failed_over["errors"] == 0
    assert failed_over["answered_by"] == {"http://127.0.0.1:8081": 400}


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_image_model_commands_run_as_a_script(tmp_path: Path) -> None:
    """The image-models block, in an empty folder and a fresh home, as one bash script: the
    digits MLP (no extra), then the CNN on a generated CIFAR-10 folder; both promoted, at
    the accuracy the section's models are for."""
    pytest.importorskip("torch")
    script = f"set -euo pipefail\n{IMAGES}"
    out = _run(script, tmp_path, _block_env(tmp_path), timeout=540)
    accuracy = [float(value) for value in re.findall(r"│ accuracy +│ ([\d.]+)", out)]
    assert len(accuracy) == 2, out
    assert accuracy[0] >= 0.97, out  # digits, mlp
    assert accuracy[1] >= 0.95, out  # generated shapes in CIFAR-10 files, cnn
    assert (tmp_path / "examples" / "cifar" / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    with Registry.open(Settings(home=tmp_path / "home", database_url="")) as registry:
        for name, mode in (("digits", "L"), ("cifar", "RGB")):
            version = registry.get_version(f"{name}@production")
            assert version.input_schema["image"]["mode"] == mode


CLASSIFYING = re.findall(
    r"```bash\n(.*?)```",
    README.split("\n### Classifying images\n", 1)[1].split("\n## ", 1)[0],
    flags=re.S,
)[0]


@pytest.mark.e2e
def test_image_classification_commands_run_as_a_script(tmp_path: Path) -> None:
    """The image block as one bash script in an empty folder and a fresh home: the digits
    example trained through a stage worker on the embedded broker, then a digit's PNG
    classified as an upload and by URL (a local web server on the allow-list) as that digit."""
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{CLASSIFYING}"
    out = _run(script, tmp_path, _block_env(tmp_path), timeout=600)
    with Registry.open(Settings(home=tmp_path / "home", database_url="")) as registry:
        (run,) = registry.runs.recent("digits")
    assert run.status == "succeeded", run.error
    assert {stage.attempts for stage in run.stages} == {1}
    assert all(stage.worker for stage in run.stages)  # every stage ran on the worker
    assert run.id in out  # --submit printed the run's id
    ready, uploaded, fetched = _json_documents(out.split(run.id, 1)[1])
    assert ready == {"ready": True}
    assert (uploaded["model"], uploaded["version"], uploaded["label"]) == ("digits", 1, 3)
    assert [c["label"] for c in uploaded["top_k"]][:1] == [3]
    assert len(uploaded["top_k"]) == 3
    assert fetched["label"] == 3
    assert len(fetched["top_k"]) == 5


SECRETS = _block_under("## Safety")


def test_secret_key_commands_run_as_a_script(tmp_path: Path) -> None:
    """The secrets-at-rest block, in a folder whose home holds a plain version: encrypted
    with the first key, then re-encrypted with the second, which alone reads it after."""
    from shipyard.errors import ArtifactError
    from shipyard.registry.secrets import SecretKey

    home = Settings(home=tmp_path / "home", database_url="")
    with Registry.open(home) as registry:
        registry.register_version(
            "fraud",
            files={"model.onnx": b"model bytes"},
            format="onnx",
            input_schema={"features": ["a"]},
            output_schema={},
            metrics={},
        )
    blobs = [path for path in (tmp_path / "home" / "artifacts").rglob("*") if path.is_file()]
    out = _run(f"set -euo pipefail\n{SECRETS}", tmp_path, _block_env(tmp_path), timeout=120)
    keys = tmp_path / "keys"
    first, second = (SecretKey.load(keys / n) for n in ("artifacts.secret", "artifacts-2.secret"))
    assert f"encrypted {len(blobs)} plain blobs, re-encrypted 0, skipped 0" in out
    assert f"encrypted 0 plain blobs, re-encrypted {len(blobs)}, skipped 0" in out
    assert f"key {first.key_id} no longer reads them" in out
    with Registry.open(home.model_copy(update={"secret_key": second.path})) as registry:
        assert registry.load_artifact("fraud:1").files == {"model.onnx": b"model bytes"}
    with (
        Registry.open(home.model_copy(update={"secret_key": first.path})) as registry,
        pytest.raises(ArtifactError, match=second.key_id),
    ):
        registry.load_artifact("fraud:1")


STAGE_WORKERS = _block_under("## Stage workers")


@pytest.mark.e2e
def test_stage_worker_commands_run_as_a_script(tmp_path: Path) -> None:
    """The stage-workers block, in an empty folder and a fresh home, as one bash script: a
    run queued before any worker, two workers on the embedded broker (stopped at the end),
    a second run followed to its end, and the first run's stages with their workers."""
    env = _block_env(tmp_path)
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{STAGE_WORKERS}"
    out = _run(script, tmp_path, env, timeout=600)
    with Registry.open(Settings(home=tmp_path / "home", database_url="")) as registry:
        second, run = registry.runs.recent("fraud")
    assert (run.status, second.status) == ("succeeded", "succeeded"), (run.error, second.error)
    assert f"run {run.id}" in out
    workers = {stage.name: stage.worker or "" for stage in run.stages}
    assert workers["split"].endswith(" data")
    assert workers["promote"].endswith(" model")
    assert "attempts" in out
    assert "fraud:1" in out

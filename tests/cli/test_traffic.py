"""``shipyard traffic`` end to end: bad options, an unreachable target, a real run against a
real ``shipyard serve`` child with labels stored through ``POST /v1/feedback``, seeds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.registry import Registry, Role
from shipyard.registry.users import Users
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

from .conftest import Cli, runner


@dataclass(frozen=True)
class Served:
    """A real ``shipyard serve`` shared by the module's runs, its home and an operator key."""

    url: str
    key: str
    home: Path


@pytest.fixture(scope="module")
def served(trained_model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real server over a copy of the trained home, and an operator API key of that home:
    one per module, as starting one is most of a case's time; the cases only add labels,
    so each compares the registry's counts before and after its own run."""
    root = tmp_path_factory.mktemp("traffic")
    home = root / "home"
    shutil.copytree(trained_model_home, home)
    with Registry.open(Settings(home=home)) as registry:
        _, key = Users(registry).create_api_key("traffic", Role.OPERATOR)
    with ServerProcess(Settings(home=home), log=root / "server.log") as server:
        yield Served(server.url, key, home)


@pytest.fixture
def served_cli(capsys: pytest.CaptureFixture[str], served: Served) -> Cli:
    """The CLI on the shared server's home."""
    return runner(capsys, served.home)


def feedback_counts(home: Path) -> dict[str, int]:
    """The registry's label totals for fraud."""
    with Registry.open(Settings(home=home)) as registry:
        return registry.monitoring.feedback_counts("fraud")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--think-min", "2", "--think-max", "1"], "--think-min (2 s) is above --think-max (1 s)"),
        (["--label-delay-min", "5", "--label-delay-max", "1"], "--label-delay-min (5 s) is above"),
        (["--label-probability", "1.5"], "--label-probability must be between 0 and 1, got 1.5"),
        (["--label-probability", "-0.1"], "--label-probability must be between 0 and 1"),
        (["--label-noise", "2"], "--label-noise must be between 0 and 1"),
        (["--rate", "50", "--think-max", "1"], "with --rate the arrivals follow the rate alone"),
        (["--rate", "0"], "--rate must be a positive number"),
        (["--drift-at", "5"], "--drift-at needs --drift SCENARIO"),
        (["--drift", "sideways"], "unknown drift scenario 'sideways'"),
        (["--requests", "0"], "--requests must be a whole number of at least 1"),
        (["--duration", "-1"], "--duration must be a positive number"),
        (["--url", "ftp://127.0.0.1:21"], "--url must be http://HOST:PORT"),
        (["--data", "missing.csv"], "no such file: missing.csv"),
    ],
)
def test_bad_options_are_one_clear_error_and_exit_2(
    cli: Cli, options: list[str], message: str
) -> None:
    result = cli("traffic", "--requests", "10", *options)
    assert result.code == 2, result
    assert message in " ".join(result.err.split())


def test_an_unknown_protocol_is_a_usage_error(cli: Cli) -> None:
    result = cli("traffic", "--protocol", "carrier-pigeon")
    assert result.code == 2
    assert "'carrier-pigeon' is not one of" in " ".join(result.err.split())


def test_no_server_at_the_url_is_an_unavailable_error(cli: Cli, tmp_path: Path) -> None:
    from shipyard.children import free_port

    port = free_port()
    result = cli("traffic", "--url", f"http://127.0.0.1:{port}", "--requests", "5", "-q")
    assert result.code == 6
    err = " ".join(result.err.split())
    assert f"nothing answers at http://127.0.0.1:{port}" in err
    assert "shipyard serve --models fraud" in err


def test_a_label_column_the_file_lacks_is_named(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    result = cli("traffic", "--data", str(data), "--label-column", "truth", "--requests", "1")
    assert result.code == 2
    assert "has no label column 'truth'" in " ".join(result.err.split())


@pytest.mark.parametrize("protocol", ["oip", "mlflow", "json"])
def test_a_real_run_labels_predictions_through_the_feedback_route(
    served_cli: Cli, served: Served, tmp_path: Path, protocol: str
) -> None:
    url, key = served.url, served.key
    summary = tmp_path / "summary.json"
    before = feedback_counts(served.home)
    result = served_cli(
        "traffic", "--url", url, "--protocol", protocol, "--users", "4", "--requests", "400",
        "--label-probability", "0.5", "--label-delay-min", "0", "--label-delay-max", "0.3",
        "--api-key", key, "--seed", "3", "-o", str(summary),
    )  # fmt: skip
    assert result.code == 0, result
    document = json.loads(summary.read_text())
    assert document["requests"] == document["succeeded"] == 400
    assert document["errors"] == 0
    assert document["errors_by_kind"] == {}
    assert 150 <= document["labels_sent"] <= 250
    assert document["labels_sent"] == document["labels_chosen"]
    assert document["labels_unsent"] == document["labels_failed"] == 0
    latency = document["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert document["versions"] == {"1": 400}
    assert sum(b["labels"] for b in document["labels_by_delay"]) == document["labels_sent"]
    assert document["duration_s"] > 0
    assert document["config"]["protocol"] == protocol
    assert document["config"]["users"] == 4
    assert "api_key" not in json.dumps(document)
    assert key not in json.dumps(document)
    # The labels reached the registry, once each, under ids the server gave its answers.
    counts = feedback_counts(served.home)
    assert counts["accepted"] - before["accepted"] == document["labels_sent"]
    assert counts["duplicate"] == before["duplicate"] == 0
    assert "400 (400 answered)" in result.out


def test_labels_without_credentials_stop_before_the_first_request(
    served_cli: Cli, served: Served
) -> None:
    result = served_cli(
        "traffic", "--url", served.url, "--requests", "10", "--label-probability", "0.5"
    )
    assert result.code == 2
    err = " ".join(result.err.split())
    assert "POST /v1/feedback on" in err
    assert "shipyard users api-key create traffic --role operator" in err


def test_a_model_the_server_does_not_serve_is_named(served_cli: Cli, served: Served) -> None:
    result = served_cli("traffic", "--url", served.url, "--model", "other", "--requests", "5")
    assert result.code == 3
    assert "does not serve 'other'" in " ".join(result.err.split())


def test_the_same_seed_sends_the_same_labels_and_delays(
    served_cli: Cli, served: Served, tmp_path: Path
) -> None:
    url, key = served.url, served.key

    def run(seed: int, name: str) -> dict[str, object]:
        out = tmp_path / name
        result = served_cli(
            "traffic", "--url", url, "--users", "2", "--requests", "300", "--seed", str(seed),
            "--label-probability", "0.4", "--label-delay-max", "0.2", "--label-noise", "0.2",
            "--api-key", key, "--drift", "concept", "--drift-at", "0", "-q", "-o", str(out),
        )  # fmt: skip
        assert result.code == 0, result
        assert result.out == ""  # --quiet
        return json.loads(out.read_text())

    first, again, other = run(11, "a.json"), run(11, "b.json"), run(12, "c.json")
    keys = ("labels_chosen", "labels_wrong", "labels_by_delay", "requests")
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert {k: first[k] for k in keys} != {k: other[k] for k in keys}


def test_a_client_with_two_addresses_fails_over_from_one_that_refuses(
    served_cli: Cli, served: Served, tmp_path: Path
) -> None:
    from shipyard.children import free_port

    down = f"http://127.0.0.1:{free_port()}"
    summary = tmp_path / "summary.json"
    result = served_cli(
        "traffic", "--url", down, "--url", served.url, "--users", "3", "--requests", "60",
        "--label-probability", "0.5", "--api-key", served.key, "-o", str(summary),
    )  # fmt: skip
    assert result.code == 0, result
    document = json.loads(summary.read_text())
    assert document["errors"] == 0
    assert document["succeeded"] == 60
    # The check found the second address answering: the users started there, none moved.
    assert document["failovers"] == 0
    assert document["answered_by"] == {served.url: 60}
    assert document["labels_failed"] == 0
    assert document["config"]["target"] == f"{down} or {served.url}"
    assert "failovers" in result.out


def test_every_address_down_is_one_unavailable_error_naming_each(cli: Cli) -> None:
    from shipyard.children import free_port

    first, second = (f"http://127.0.0.1:{port}" for port in (free_port(), free_port()))
    result = cli("traffic", "--url", first, "--url", second, "--requests", "5", "-q")
    assert result.code == 6
    err = " ".join(result.err.split())
    assert f"nothing answers at {first} (" in err
    assert f"nor at {second} (" in err


def test_the_same_address_twice_is_refused(cli: Cli) -> None:
    url = "http://127.0.0.1:8000"
    result = cli("traffic", "--url", url, "--url", url + "/", "--requests", "5")
    assert result.code == 2
    assert f"--url {url} is given twice" in " ".join(result.err.split())

"""shipyard stream: what it refuses before scoring anything (one line, an exit code)."""

from __future__ import annotations

import pytest

from .conftest import Cli


def test_no_production_model_is_a_clear_not_found(cli: Cli) -> None:
    result = cli("stream", "--model", "fraud", "--broker", "memory://cli-stream")
    assert result.code == 3
    assert "fraud" in result.err
    assert "Traceback" not in result.err


def test_an_unknown_alias_names_it(model_cli: Cli) -> None:
    result = model_cli("stream", "--model", "fraud@canary", "--broker", "memory://cli-stream")
    assert result.code == 3
    assert "canary" in result.err


def test_an_unreachable_broker_fails_at_start(model_cli: Cli) -> None:
    result = model_cli("stream", "--model", "fraud", "--broker", "amqp://guest:s3cret@127.0.0.1:1/")
    assert result.code == 6
    assert "cannot reach RabbitMQ" in result.err
    assert "s3cret" not in result.err


def test_workers_and_mpiexec_do_not_mix(model_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMI_RANK", "1")
    result = model_cli("stream", "--model", "fraud", "--workers", "2", "--broker", "memory://x")
    assert result.code == 2
    assert "mpiexec -n N shipyard stream" in result.err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--batch-size", "0"), ("--workers", "0"), ("--max-deliveries", "0"), ("--max-wait-ms", "-1")],
)
def test_out_of_range_options_are_usage_errors(model_cli: Cli, option: str, value: str) -> None:
    result = model_cli("stream", "--model", "fraud", option, value)
    assert result.code == 2
    assert option in result.err


def test_model_is_required(cli: Cli) -> None:
    result = cli("stream")
    assert result.code == 2
    assert "--model" in result.err

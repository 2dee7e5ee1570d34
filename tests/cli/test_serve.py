"""shipyard serve: announced only once its port is held; a taken port is one line, exit 6."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.children import Child, http_ok
from shipyard.cli.serve import bind, split_names
from shipyard.errors import UnavailableError

from .conftest import Cli


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port of 127.0.0.1 that something listens on for the test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_one_line_and_exit_6(cli: Cli, taken_port: int, workers: str) -> None:
    result = cli("serve", "--port", str(taken_port), "--workers", workers)
    assert result.code == 6
    assert result.err.splitlines() == [
        f"error: port {taken_port} on 127.0.0.1 is in use; stop what listens there "
        "(`ss -ltnp` shows it) or choose another with --port"
    ]
    assert "serving" not in result.out


def test_a_port_is_held_from_the_moment_serve_announces_it() -> None:
    """Two servers started at once: the second is refused at bind, not after it announced
    itself (uvicorn listens only once the models have loaded)."""
    with bind("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        with pytest.raises(UnavailableError, match=f"port {port} on 127.0.0.1 is in use"):
            bind("127.0.0.1", port).close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "port 70000 is not a TCP port"),
        (["--host", "host.invalid"], "cannot listen on host.invalid:"),
    ],
)
def test_an_address_that_cannot_be_bound_is_a_usage_error(
    cli: Cli, args: list[str], message: str
) -> None:
    result = cli("serve", *args)
    assert result.code == 2
    assert message in result.err
    assert "serving" not in result.out


def test_models_are_given_by_repeating_the_option_or_with_commas() -> None:
    assert split_names(["a,b", "c", " d , ,e"]) == ["a", "b", "c", "d", "e"]
    assert split_names(None) == []


def test_each_model_of_a_comma_list_is_checked(model_cli: Cli) -> None:
    result = model_cli("serve", "--models", "fraud,nope", "--port", "0")
    assert result.code == 3
    assert "nope" in result.err
    assert "serving" not in result.out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_announced_address_is_the_bound_one(
    home_with_model: Path, tmp_path: Path, workers: str
) -> None:
    """With --port 0 the system picks the port: the announcement names the one held."""
    command = [sys.executable, "-m", "shipyard", "--home", str(home_with_model), "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    server = Child(
        [*command, "-m", "fraud", "--port", "0", "--workers", workers],
        env=env,
        log=tmp_path / "serve.log",
        die_with_parent=True,
    )
    with server.start(server.logged("serving fraud on http://127.0.0.1:"), timeout_s=60):
        line = next(ln for ln in server.output().splitlines() if ln.startswith("serving"))
        url = line.split(" on ")[1].split(" ")[0]
        assert not url.endswith(":0")
        # The models load after the port is held: ready comes later (bounded).
        server.wait_ready(http_ok(f"{url}/v2/health/ready"), timeout_s=60)
        server.stop(30, signum=signal.SIGINT)

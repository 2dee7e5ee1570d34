import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

import shipyard
from shipyard.cli import app, main
from shipyard.cli.context import HELP_WIDTH

HEAVY = ["alembic", "fastapi", "numpy", "pandas", "pyarrow", "sklearn", "sqlalchemy", "uvicorn"]


def test_unreachable_database_is_one_line_exit_6(capsys: pytest.CaptureFixture[str], home) -> None:
    url = "postgresql+psycopg://shipyard:secret@127.0.0.1:1/none"
    with pytest.raises(SystemExit) as exited:
        main(["--home", str(home), "--database-url", url, "models", "list"])
    assert exited.value.code == 6
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err
    assert "secret" not in err
    assert "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("data", "examples", "pipeline", "models", "predict", "keys", "demo"):
        assert command in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"shipyard {shipyard.__version__}\n"


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "shipyard" for p, _ in COMMANDS]
)
def test_help_reads_well_at_80_columns(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    path: tuple[str, ...],
    command: Any,
) -> None:
    """Every option name in full, metavars instead of value types, no {ARGUMENT} in usage."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            assert (param.metavar or param.name.upper()) in out
            continue
        for name in [*param.opts, *param.secondary_opts]:
            assert re.search(rf"{re.escape(name)}(\s|,|$)", out, re.M), f"{name} cut: {out}"
    assert not re.search(r"<(str|int|float|bool|path|list)", out), out
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage


def test_help_without_a_terminal_is_wide_enough(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) == HELP_WIDTH


def test_help_imports_no_heavy_library() -> None:
    """``shipyard --help`` stays quick: commands import pandas, SQLAlchemy, scikit-learn,
    uvicorn… when they run."""
    script = (
        "import sys\n"
        "from shipyard.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stderr.strip() == "[]"


def _shipyard(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


DOWN = {
    "RabbitMQ": "amqp://guest:guest@127.0.0.1:1/",
    "NATS": "nats://127.0.0.1:1",
    "Redis": "redis://127.0.0.1:1/0",
}


@pytest.mark.parametrize("backend", list(DOWN))
def test_a_broker_that_is_down_is_exactly_one_error_line(home: Path, backend: str) -> None:
    done = _shipyard(
        "--home", str(home), "consume", "results", "--broker", DOWN[backend], "--wait", "0"
    )
    assert done.returncode == 6
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"error: cannot reach {backend}")


def test_a_stream_worker_on_a_broker_that_is_down_is_one_line(home: Path) -> None:
    done = _shipyard("--home", str(home), "stream", "-m", "fraud", "--broker", DOWN["RabbitMQ"])
    assert done.returncode == 6
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr


def test_verbose_shows_the_libraries_logs(home: Path) -> None:
    done = _shipyard(
        "--home", str(home), "-v", "consume", "results", "--broker", DOWN["RabbitMQ"], "--wait", "0"
    )
    assert done.returncode == 6
    lines = done.stderr.splitlines()
    assert any("aiormq" in line for line in lines), done.stderr
    assert lines[-1].startswith("error: cannot reach RabbitMQ")

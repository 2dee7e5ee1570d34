"""Run the ``shipyard`` CLI in-process against a home folder and capture what it prints."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.examples import example_spec


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


def _runner(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(["--home", str(home), *args])
        except SystemExit as exit:
            code = int(exit.code or 0)
        else:  # main always exits
            raise AssertionError("main() returned without exiting")
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with model fraud v1 in production, trained on 6,000 rows; copy before changing."""
    home = tmp_path_factory.mktemp("trained") / "home"
    data = home.parent / "fraud.parquet"
    for args in (
        ["data", "generate", "fraud", "--rows", "6000", "--seed", "3", "-o", str(data)],
        ["pipeline", "run", str(example_spec("fraud")), "--data", str(data)],
    ):
        with pytest.raises(SystemExit) as exited:
            main(["--home", str(home), *args])
        assert exited.value.code == 0, args
    return home


@pytest.fixture
def home_with_model(trained_home: Path, tmp_path: Path) -> Path:
    """A private copy of the trained home."""
    copy = tmp_path / "home"
    shutil.copytree(trained_home, copy)
    return copy


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    """The CLI on an empty home."""
    return _runner(capsys, home)


@pytest.fixture
def model_cli(capsys: pytest.CaptureFixture[str], home_with_model: Path) -> Cli:
    """The CLI on a home that has fraud v1 in production."""
    return _runner(capsys, home_with_model)

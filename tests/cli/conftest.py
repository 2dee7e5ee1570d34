"""Run the ``shipyard`` CLI in-process against a home folder and capture what it prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


def runner(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    """The CLI in-process on ``home``: each call returns its exit code and what it printed."""

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


@pytest.fixture
def home_with_model(model_home: Path) -> Path:
    """A private copy of a home with fraud v1 in production (root conftest)."""
    return model_home


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    """The CLI on an empty home."""
    return runner(capsys, home)


@pytest.fixture
def model_cli(capsys: pytest.CaptureFixture[str], home_with_model: Path) -> Cli:
    """The CLI on a home that has fraud v1 in production."""
    return runner(capsys, home_with_model)

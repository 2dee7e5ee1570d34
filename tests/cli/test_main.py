import pytest

from shipyard.cli import main


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
    for command in ("data", "pipeline", "models", "predict", "keys", "demo"):
        assert command in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2

import json
from pathlib import Path

from shipyard.examples import example_spec


def test_list_on_an_empty_home_says_what_to_do(cli) -> None:
    result = cli("models", "list")
    assert result.code == 0
    assert "shipyard demo" in result.out


def test_list_and_show(model_cli) -> None:
    listed = model_cli("models", "list")
    assert listed.code == 0
    assert "fraud" in listed.out
    assert "production→v1" in listed.out
    shown = model_cli("models", "show", "fraud")
    assert shown.code == 0
    assert "v1" in shown.out
    version = model_cli("models", "show", "fraud@production")
    assert version.code == 0, version.err
    assert "fraud:1" in version.out
    assert "average_precision" in version.out
    assert "sha256:" in version.out


def test_unknown_model_exits_3(model_cli) -> None:
    for args in (("models", "show", "nope"), ("models", "show", "nope:1")):
        result = model_cli(*args)
        assert result.code == 3, args
        assert "nope" in result.err


def test_unknown_version_and_alias(model_cli) -> None:
    assert model_cli("models", "show", "fraud:9").code == 3
    result = model_cli("models", "show", "fraud@staging")
    assert result.code == 3
    assert "staging" in result.err


def test_malformed_reference(model_cli) -> None:
    result = model_cli("models", "show", "fraud:abc")
    assert result.code == 2
    assert "NAME:VERSION" in result.err or "name:version" in result.err.lower()


def test_promote_and_rollback(model_cli, tmp_path: Path) -> None:
    data = tmp_path / "d.parquet"
    assert (
        model_cli(
            "data", "generate", "fraud", "--rows", "3000", "--seed", "9", "-o", str(data)
        ).code
        == 0
    )
    spec = tmp_path / "s.yaml"
    spec.write_text(
        example_spec("fraud").read_text().replace("require: beats_current", "require: never")
    )
    assert model_cli("pipeline", "run", str(spec), "--data", str(data)).code == 0
    promoted = model_cli("models", "promote", "fraud:2", "--alias", "production")
    assert promoted.code == 0, promoted.err
    assert "v2" in promoted.out
    rolled = model_cli("models", "rollback", "fraud", "--alias", "production")
    assert rolled.code == 0, rolled.err
    assert "v1" in rolled.out
    assert "production→v1" in model_cli("models", "list").out
    events = model_cli("monitor", "events", "fraud")
    assert events.code == 0, events.err
    assert "model.promoted" in events.out
    assert "model.rolled_back" in events.out
    rollbacks = model_cli("monitor", "events", "fraud", "--kind", "model.rolled_back", "--json")
    [document] = json.loads(rollbacks.out)
    assert document["evidence"] == {"alias": "production", "from": 2, "to": 1, "actor": "cli"}


def test_rollback_without_history_is_a_conflict(model_cli) -> None:
    result = model_cli("models", "rollback", "fraud")
    assert result.code == 4
    assert "promote" in result.err
    assert "production→v1" in model_cli("models", "list").out


def test_promote_unknown_version_changes_nothing(model_cli) -> None:
    result = model_cli("models", "promote", "fraud:7")
    assert result.code == 3
    assert "production→v1" in model_cli("models", "list").out

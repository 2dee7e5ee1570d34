"""``shipyard retrain NAME`` and ``shipyard monitor events NAME``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retraining import RETRAIN, copy_of_production, serve_traffic
from shipyard.registry import SHADOW_ALIAS, Registry

from .conftest import Cli, runner


def test_retrain_of_an_unknown_model_exits_3(model_cli: Cli) -> None:
    result = model_cli("retrain", "nope")
    assert result.code == 3
    assert "no model named 'nope'" in result.err


def test_a_refused_retrain_exits_4_with_the_reason_and_the_events_say_so(model_cli: Cli) -> None:
    """fraud@production (the example spec, with its retrain: section) has no labelled
    production row yet."""
    result = model_cli("retrain", "fraud")
    assert result.code == 4, result.out + result.err
    assert (
        "fraud: retrain waiting: too few rows: 0 labelled predictions, data.min_rows is 1,000"
        in (" ".join(result.err.split()))
    )
    events = model_cli("monitor", "events", "fraud")
    assert events.code == 0, events.err
    assert "retrain.skipped" in events.out
    assert "too few rows" in events.out
    as_json = model_cli("monitor", "events", "fraud", "--kind", "retrain.skipped", "--json")
    [document] = json.loads(as_json.out)
    assert document["kind"] == "retrain.skipped"
    assert document["evidence"]["trigger"]["kind"] == "manual"
    assert document["evidence"]["labelled"]["rows"] == 0
    # Waiting for data: no cooldown, so asking again is refused for the same reason.
    again = model_cli("retrain", "fraud")
    assert again.code == 4
    assert "too few rows" in again.err
    latest = json.loads(model_cli("monitor", "events", "fraud", "--limit", "1", "--json").out)
    assert len(latest) == 1
    assert latest[0]["id"] == 2  # newest last, and only the latest N


def test_events_of_a_model_without_any(model_cli: Cli) -> None:
    result = model_cli("monitor", "events", "fraud", "--kind", "model.promoted")
    assert result.code == 0
    assert "fraud: no model.promoted event yet" in result.out
    assert model_cli("monitor", "events", "nope").code == 3
    assert model_cli("monitor", "events", "fraud", "--limit", "0").code == 2


def test_a_retrain_whose_winner_goes_into_shadow_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """With gate.shadow, the hold-out winner waits behind the shadow alias: not an error."""
    shadow = RETRAIN.replace("holdout: 0.3}", "holdout: 0.3, shadow: 300}")
    settings = copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "home", shadow)
    serve_traffic(settings, 4000, seed=11, drift="concept", strength=0.05)
    result = runner(capsys, settings.home)("retrain", "fraud")
    assert result.code == 0, result.out + result.err
    assert "fraud: shadowing" in result.out
    assert "retrain.shadowing" in result.out
    with Registry.open(settings) as registry:
        assert registry.get_version(f"fraud@{SHADOW_ALIAS}").version == 2
        assert registry.get_version("fraud@production").version == 1
    # Its live labels are in: the next `shipyard retrain` judges it first, as the monitor
    # would, then asks for a retrain, which the cooldown the verdict started refuses.
    serve_traffic(settings, 300, seed=31, drift="concept", shadow=2, truth="shadow")
    again = runner(capsys, settings.home)("retrain", "fraud")
    assert "fraud: shadow promoted — fraud:2 promoted to production" in again.out
    assert "model.promoted" in again.out
    assert again.code == 4, again.out + again.err
    assert "cooldown" in again.err
    with Registry.open(settings) as registry:
        assert registry.get_version("fraud@production").version == 2

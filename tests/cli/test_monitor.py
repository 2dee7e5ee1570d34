"""``shipyard monitor --once`` and ``shipyard monitor report``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shipyard.monitoring.log import ParquetLog, prediction_table
from shipyard.monitoring.report import event_line
from shipyard.registry import Registry
from shipyard.settings import Settings

from .conftest import Cli

FEATURES = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]


def log_predictions(home: Path, n: int) -> list[str]:
    """``n`` logged predictions of fraud v1 (features all zero), their ids."""
    ids = [f"r{i}" for i in range(n)]
    outputs = {"probability": np.linspace(0, 1, n), "label": (np.arange(n) % 2).astype(np.int64)}
    features = np.zeros((n, len(FEATURES)), dtype=np.float32)
    table = prediction_table(
        "fraud", 1, "http", ids, FEATURES, features, outputs, 2.0, datetime.now(UTC)
    )
    ParquetLog(Settings(home=home).prediction_log_path).write(table)
    return ids


def test_report_of_an_unknown_model_exits_3(model_cli: Cli) -> None:
    result = model_cli("monitor", "report", "nope")
    assert result.code == 3
    assert "nope" in result.err


def test_report_before_any_monitor_says_how_to_start(model_cli: Cli) -> None:
    result = model_cli("monitor", "report", "fraud")
    assert result.code == 0, result.err
    assert "shipyard monitor" in result.out


def test_once_then_report(model_cli: Cli, home_with_model: Path) -> None:
    ids = log_predictions(home_with_model, 300)
    with Registry.open(Settings(home=home_with_model)) as registry:
        labels = [(i, str(n % 3 % 2)) for n, i in enumerate(ids[:100])]
        registry.monitoring.add_feedback("fraud", labels, source="file")
    result = model_cli(
        "monitor", "--once", "--models", "fraud", "--window-rows", "100", "--metrics-port", "0"
    )
    assert result.code == 0, result.err
    assert "fraud: 300 new predictions" in result.out
    assert "metrics on http://127.0.0.1:" in result.err
    assert "joined 100" in result.out
    # Nothing new: no event again.
    result = model_cli("monitor", "--once", "--models", "fraud", "--window-rows", "100")
    assert result.code == 0, result.err
    assert "events: none" in result.out
    report = model_cli("monitor", "report", "fraud")
    assert report.code == 0, report.err
    assert "fraud:1 (production)" in report.out
    assert "average_precision" in report.out
    assert "DRIFT" in report.out  # every feature stuck at 0 is far from the training data
    as_json = model_cli("monitor", "report", "fraud", "--json")
    document = json.loads(as_json.out)
    [version] = document["versions"]
    assert version["snapshot"]["windows"]["rows"]["rows"] == 100
    kinds = sorted(e["kind"] for e in version["events"])
    assert kinds == ["drift.detected", "performance.degraded"]  # labels at random: AP falls


def test_unknown_model_to_watch_exits_3(model_cli: Cli) -> None:
    result = model_cli("monitor", "--once", "--models", "nope")
    assert result.code == 3
    assert "nope" in result.err


def test_a_long_running_monitor_of_a_mistyped_model_exits_3_naming_the_known_ones(
    home_with_model: Path,
) -> None:
    """Without --once too: the monitor does not retry a name that does not exist for ever."""
    env = Settings(home=home_with_model, monitor_interval_seconds=0.1).child_env()
    command = [sys.executable, "-m", "shipyard", "monitor", "--no-broker", "--models", "fruad"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"the monitor kept running: {error.stderr!r}") from error
    assert done.returncode == 3, done.stderr
    assert "no model named fruad to monitor; the registry has fraud" in done.stderr
    assert "trying again" not in done.stderr


def test_once_takes_feedback_published_to_the_embedded_broker(
    model_cli: Cli, home_with_model: Path, tmp_path: Path
) -> None:
    """No --broker: `shipyard publish` and the monitor meet on the home's embedded NATS."""
    ids = log_predictions(home_with_model, 50)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"id": i, "label": n % 2}) + "\n" for n, i in enumerate(ids[:20]))
    )
    published = model_cli("publish", str(labels), "--queue", "fraud.feedback")
    assert published.code == 0, published.err
    # --no-broker leaves the queue alone.
    result = model_cli("monitor", "--once", "--no-broker", "--models", "fraud")
    assert result.code == 0, result.err
    assert "joined" not in result.out
    result = model_cli("monitor", "--once", "--models", "fraud")
    assert result.code == 0, result.err
    assert "joined 20" in result.out


def test_once_exits_with_the_error_of_a_model_that_failed(
    model_cli: Cli, home_with_model: Path
) -> None:
    from sqlalchemy import delete, select

    from shipyard.registry.tables import ModelRow, ModelVersionRow, TagRow

    log_predictions(home_with_model, 10)
    with (
        Registry.open(Settings(home=home_with_model)) as registry,
        registry.transaction(write=True) as session,  # a tag no spec validates
    ):
        version_id = session.scalar(
            select(ModelVersionRow.id)
            .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
            .where(ModelRow.name == "fraud", ModelVersionRow.version == 1)
        )
        assert version_id is not None
        session.execute(
            delete(TagRow).where(TagRow.version_id == version_id, TagRow.key == "monitoring")
        )
        session.add(TagRow(version_id=version_id, key="monitoring", value="{bad"))
    result = model_cli("monitor", "--once", "--no-broker", "--models", "fraud")
    assert result.code == 2, result.out
    assert "fraud: InvalidInputError" in result.err
    report = model_cli("monitor", "report", "fraud")
    assert "last error (1 in a row" in report.out


def test_a_gate_verdict_in_a_line_names_its_rows_held_out_or_in_shadow() -> None:
    def gated(**rows: object) -> dict[str, object]:
        sides = {"candidate": {"version": 2, "value": 0.9}, "current": {"version": 1, "value": 0.8}}
        evidence = {"won": True, "metric": "average_precision", **sides, **rows}
        return {"kind": "retrain.gated", "evidence": evidence}

    held_out = event_line(gated(holdout={"rows": 600, "share": 0.3}))
    assert held_out.endswith("on 600 held-out rows")
    shadow = event_line(gated(shadow={"rows": 300, "needed": 300}))
    assert shadow.endswith("on 300 labelled live rows in shadow")
    assert event_line(gated(shadow=True, holdout={"rows": 400})).endswith(
        "400 labelled live rows in shadow"
    )


def test_metrics_on_every_interface_or_a_clear_error_for_an_address_not_here(
    model_cli: Cli,
) -> None:
    """--metrics-host 0.0.0.0 lets a Prometheus elsewhere scrape the monitor; an address
    this machine does not have is refused before any pass runs."""
    wide = model_cli("monitor", "--once", "--metrics-port", "0", "--metrics-host", "0.0.0.0")
    assert wide.code == 0, wide.err
    assert "metrics on http://0.0.0.0:" in wide.err
    bad = model_cli("monitor", "--once", "--metrics-port", "0", "--metrics-host", "192.0.2.1")
    assert bad.code == 2, bad.err
    assert "cannot serve metrics on 192.0.2.1:0" in " ".join(bad.err.split())
    assert "--metrics-host" in bad.err
    assert "new predictions" not in bad.out

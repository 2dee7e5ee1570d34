"""``shipyard demo``: what its batch and comparison steps print, and that every command of
its closing "Next" list works on the home it leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from shipyard.children import free_port
from shipyard.cli.demo import loop as loop_module
from shipyard.cli.demo.loop import (
    ANSWER_WAIT_S,
    LIMIT_S,
    Channel,
    LoopRun,
    _ended,
    _not_answering,
    _quiet_event_lines,
    _stopped,
    _until_swapped,
    demo_spec_text,
)
from shipyard.cli.demo.next_steps import (
    SERVE_PORT,
    next_steps,
    shipyard_command,
    write_request,
)
from shipyard.cli.demo.scoring import label_metrics
from shipyard.cli.demo.timeline import (
    gate_table,
    loop_failure,
    loop_verdicts,
    timeline,
    traffic_table,
)
from shipyard.errors import UnavailableError
from shipyard.examples import example_spec
from shipyard.monitoring.monitor import Monitor
from shipyard.monitoring.report import event_document, event_line
from shipyard.monitoring.retraining import RetrainSpec
from shipyard.pipeline import load_spec, parse_spec
from shipyard.registry import Registry
from shipyard.registry.events import EventRecord
from shipyard.settings import Settings
from shipyard.traffic.summary import TrafficStats

from .conftest import Cli

BIN = Path(sys.executable).parent
SMALL = ["--rows", "4000", "--holdout-rows", "1000", "--requests", "200", "--stream-workers", "1"]


def test_label_metrics_against_the_labels() -> None:
    truth = pd.Series([1, 1, 0, 0, 0])
    probability = pd.Series([0.9, 0.2, 0.6, 0.1, 0.0])
    metrics = label_metrics(truth, probability, (probability >= 0.5).astype(int))
    assert (metrics.rows, metrics.positives, metrics.flagged) == (5, 2, 2)
    assert (metrics.precision, metrics.recall) == (0.5, 0.5)
    assert metrics.average_precision == pytest.approx(average_precision_score(truth, probability))
    assert metrics.roc_auc == pytest.approx(5 / 6)  # fraud above legitimate in 5 of 6 pairs


def test_label_metrics_say_none_where_the_file_cannot_tell() -> None:
    """No fraud row: no recall, no ranking metric (scikit-learn would warn or raise);
    nothing flagged: no precision."""
    metrics = label_metrics(pd.Series([0, 0]), pd.Series([0.1, 0.2]), pd.Series([0, 0]))
    assert (metrics.precision, metrics.recall) == (None, None)
    assert (metrics.average_precision, metrics.roc_auc) == (None, None)


def test_suggestions_repeat_the_home_options_the_demo_was_given() -> None:
    assert shipyard_command({}) == "shipyard"
    assert shipyard_command({"home": None, "database_url": None, "other": 1}) == "shipyard"
    assert (
        shipyard_command({"home": Path("my home"), "database_url": "sqlite:///x.db"})
        == "shipyard --home 'my home' --database-url sqlite:///x.db"
    )
    secret = {"database_url": "postgresql+psycopg://me:s3cret@db/shipyard"}
    assert shipyard_command(secret) == 'shipyard --database-url "$SHIPYARD_DATABASE_URL"'
    steps = next_steps(
        "shipyard --home 'my home'", model="fraud", request=Path("my home/r.json"), previous="v"
    )
    commands = [command for step in steps for command in step.commands]
    assert all(c.startswith(("shipyard --home 'my home' ", "curl ", "kill ")) for c in commands)
    assert any(c.endswith("-d @'my home/r.json'") for c in commands)


def test_the_request_holds_the_best_scored_fraud_and_a_legitimate_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [5, 6, 7, 8], "Class": [0, 1, 1, 0]})
    path = write_request(
        frame, pd.Series([0.9, 0.3, 0.8, 0.1]), ["a", "b"], "Class", tmp_path / "r.json"
    )
    body = json.loads(path.read_text())
    assert body == {"instances": [{"a": 3.0, "b": 7}, {"a": 1.0, "b": 5}]}
    no_fraud = frame.assign(Class=0)
    write_request(no_fraud, pd.Series([0.0] * 4), ["a"], "Class", path)
    assert json.loads(path.read_text()) == {"instances": [{"a": 1.0}, {"a": 2.0}]}


def test_the_demo_spec_is_the_packaged_one_with_the_loops_rules() -> None:
    packaged, text = load_spec(example_spec("fraud"))
    spec = parse_spec(demo_spec_text(text))
    assert spec.model == packaged.model
    assert spec.promotion == packaged.promotion
    assert spec.monitoring is not None
    assert spec.monitoring.windows.rows == 6000
    assert spec.monitoring.drift_config().to_mapping()["threshold"] == 0.25
    rules = spec.retrain
    assert isinstance(rules, RetrainSpec)
    assert rules.triggers.drift
    assert rules.triggers.performance is None
    assert (rules.data.last, rules.data.min_rows, rules.gate.min_delta) == (2000, 1000, 0.05)
    assert rules.cooldown == 20.0
    with pytest.raises(ValueError, match="no '# Retraining on evidence' section"):
        demo_spec_text("name: fraud\n")


def _event(n: int, kind: str, at: datetime, **evidence: object) -> EventRecord:
    return EventRecord(n, "fraud", 2, kind, f"{kind}:{n}", at, dict(evidence))


def _loop(
    new: int | None, errors: int = 0, label_failures: int = 0, gated: bool | None = None
) -> LoopRun:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    http, stream = Channel("HTTP"), Channel("broker")
    for channel, first in ((http, 30.5), (stream, 31.0)):
        channel.stats.started_at = 100.0
        channel.stats.drift_started_at = 108.0
        channel.stats.requests = channel.stats.succeeded = 1000
        channel.stats.versions_first = {"2": 100.1}
        if new is not None:
            channel.stats.versions_first[str(new)] = 100.0 + first
    for _ in range(errors):
        http.stats.succeeded -= 1
        http.stats.errors["HTTP 503"] += 1
    # Label batches given up on: today counted in ``errors`` too, under "labels: ...".
    http.stats.labels_failed = label_failures
    if label_failures:
        http.stats.errors["labels: HTTP 500"] = label_failures
    events = [_event(1, "drift.detected", start + timedelta(seconds=12), share=0.77)]
    if gated is not None:
        for n, (candidate, won) in enumerate(((3, False), (4, gated)), start=2):
            sides = {
                "candidate": {"version": candidate, "value": 0.9, "metrics": {}},
                "current": {"version": 2, "value": 0.8, "metrics": {}},
                "metric": "average_precision",
                "holdout": {"rows": 600},
            }
            events.append(
                _event(n, "retrain.gated", start + timedelta(seconds=10 * n), won=won, **sides)
            )
    if new is not None:
        events.append(
            _event(9, "model.promoted", start + timedelta(seconds=30), alias="production")
        )
    return LoopRun(100.0, start, 2, new, http, stream, events, stopped=135.0)


def test_the_timeline_puts_traffic_and_events_on_one_clock() -> None:
    rows = timeline(_loop(3))
    assert [(s, what) for s, what, _ in rows] == [
        (0.0, "traffic started"),
        (8.0, "drift started"),
        (12.0, "drift.detected"),
        (30.0, "model.promoted"),
        (30.5, "first answer from v3"),
        (31.0, "first answer from v3"),
        (35.0, "traffic stopped"),
    ]
    assert rows[2][2] == "v2: share 0.7700 of features drifted"
    assert [detail for _, what, detail in rows if what.startswith("first")] == ["HTTP", "broker"]


def test_the_timeline_shows_events_as_shipyard_monitor_events_does() -> None:
    run = _loop(4, gated=True)
    details = {what: detail for _, what, detail in timeline(run)}
    gated = run.gated()
    assert gated is not None
    assert details["retrain.gated"] == f"v4 {event_line(event_document(gated))}"
    assert details["retrain.gated"] == (
        "v4 won: average_precision 0.9000 (v4) vs 0.8000 (v2) on 600 held-out rows"
    )


def test_the_verdicts_say_failures_and_a_loop_that_did_not_close() -> None:
    assert loop_verdicts(_loop(3)) == [
        "0 failed requests of 2,000 (HTTP and broker)",
        "drift onset → v3 answering on HTTP and the broker: 23.0 s",
    ]
    failed = loop_verdicts(_loop(None, errors=2))
    assert failed[0] == "2 of 2,000 requests FAILED: {'HTTP 503': 2}"
    assert failed[1] == f"no new version was promoted within {LIMIT_S:g} s (no retrain finished)"


def test_label_failures_are_not_failed_requests() -> None:
    run = _loop(3, errors=1, label_failures=5)
    assert (run.failed, run.labels_failed) == (1, 5)
    verdicts = loop_verdicts(run)
    assert verdicts[0] == "1 of 2,000 requests FAILED: {'HTTP 503': 1}"
    assert verdicts[1] == "5 labels could not be sent"
    assert loop_failure(_loop(3, label_failures=5)) is None
    cells = [column._cells for column in traffic_table(run).columns]
    assert cells[2] == ["1", "0"]  # failed
    assert cells[5] == ["5", "0"]  # labels failed


def test_the_gate_shown_is_the_promoted_candidates_and_its_verdict_is_its_own() -> None:
    """Two gates: the first candidate (v3) lost, the second (v4) won; v4 is promoted."""
    run = _loop(4, gated=True)
    gated = run.gated()
    assert gated is not None
    assert gated.evidence["candidate"]["version"] == 4
    table = gate_table(run)
    assert table is not None
    assert [c.header for c in table.columns][2] == "v4 (candidate)"
    assert str(table.caption).endswith(": won by +0.0000")  # its own verdict, not the first
    # No promotion: the last gate decides what is said; a won gate is not "lost".
    won_unpromoted = loop_verdicts(_loop(None, gated=True))
    assert won_unpromoted[-1].endswith("(the candidate won the gate but was not promoted)")
    lost = loop_verdicts(_loop(None, gated=False))
    assert lost[-1].endswith("(the candidate lost the gate)")


def test_a_loop_that_did_not_close_says_why() -> None:
    assert loop_failure(_loop(3)) is None
    assert loop_failure(_loop(None)) == f"no new version was promoted within {LIMIT_S:g} s"
    assert loop_failure(_loop(3, errors=2)) == "2 requests failed"
    silent = _loop(3)
    silent.stream.stats.versions_first.pop("3")
    silent.problems.extend(_not_answering(3, (silent.http, silent.stream)))
    assert loop_failure(silent) == f"v3 never answered over the broker within {ANSWER_WAIT_S:g} s"


def test_the_demo_exits_non_zero_when_the_loop_did_not_close(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps 1–5 at their smallest, real; the loop replaced by one that promoted nothing
    and lost requests: the summary prints, then the exit status and a line say why."""

    def no_loop(*_: object, **__: object) -> tuple[LoopRun, str]:
        return _loop(None, errors=3), "http://127.0.0.1:1/ui"

    monkeypatch.setattr(loop_module, "run_loop", no_loop)
    tiny = ["--rows", "4000", "--holdout-rows", "200", "--requests", "100"]
    result = cli("demo", *tiny, "--stream-workers", "1")
    assert result.code == 1, result.out + result.err
    assert "summary" in result.out
    assert "3 of 2,000 requests FAILED" in result.out
    assert (
        f"the demo's loop did not close: no new version was promoted within {LIMIT_S:g} s; "
        "3 requests failed"
    ) in " ".join(result.err.split())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPYARD_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{BIN}{os.pathsep}/usr/bin:/bin"
    env["COLUMNS"] = "160"  # tables wide enough to find a digest on one line; the Next
    return env  # lines are longer still, and must not be cut


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _next_block(out: str) -> str:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Next"))
    block = lines[start + 1 :]
    assert block
    assert all(line.startswith("  ") for line in block)  # the list ends the output
    return "\n".join(line.removeprefix("  ") for line in block) + "\n"


@pytest.mark.e2e
def test_the_demo_reports_its_steps_and_every_next_command_works(tmp_path: Path) -> None:
    """A small demo on a home given by ``--home`` (a relative path with a space); then its
    Next list, as printed, as one bash script from the same folder — only the server's port
    changed to a free one, as 8000 may be taken here."""
    out = _run([str(BIN / "shipyard"), "--home", "demo home", "demo", *SMALL], tmp_path, 420)
    home = tmp_path / "demo home"
    with Registry.open(Settings(home=home)) as registry:
        champion = registry.get_version("fraud:1")
    batch = out[out.index("3. batch scoring") : out.index("4. serving")]
    for shown in (
        "fraud:1 (fraud@production)",
        f"manifest sha256:{champion.manifest_digest}",
        f"Ed25519 signature (key {champion.key_id})",
        "1,000 held-out rows in",
        "rows/s",
        "flagged as fraud",
        "precision / recall",
        "demo home/data/fraud-holdout-7-scored.parquet",
    ):
        assert shown in batch, f"{shown!r} not in:\n{batch}"

    loop = " ".join(out[out.index("6. the loop") : out.index("summary")].split())
    for shown in (
        "/ui, is there while this step runs",
        "drift started",
        "drift.detected",
        "retrain.triggered",
        "retrain.trained",
        "v3 won: average_precision",
        "production: v2 → v3",
        "traffic stopped",
        "the gate: both versions on the same",
        "0 failed requests of",
        "drift onset → v3 answering on HTTP and the broker",
    ):
        assert shown in loop, f"{shown!r} not in:\n{loop}"
    firsts = [line for line in out.splitlines() if "first answer from v3" in line]
    assert len(firsts) == 2
    assert any("HTTP" in line for line in firsts)
    assert any("broker" in line for line in firsts)

    # Both versions scored the same held-out rows, each through its own verified artifact.
    data = home / "data"
    scores = [
        pd.read_parquet(data / name)
        for name in ("fraud-holdout-7-scored.parquet", "fraud-holdout-7-scored-by-v2.parquet")
    ]
    truth = pd.read_parquet(data / "fraud-holdout-7.parquet")["Class"]
    comparison = out[out.index("champion vs challenger") : out.index("server on ")]
    assert "champion vs challenger on the same 1,000 held-out rows" in comparison
    assert "fraud:1 (production)" in comparison
    assert "fraud:2 (challenger)" in comparison
    for scored in scores:
        assert scored["Class"].equals(truth)
        ap = average_precision_score(truth, scored["probability"])
        assert f"{ap:.4f}" in comparison

    port = str(free_port())
    script = _next_block(out)
    assert f"--port {SERVE_PORT} &" in script
    script = script.replace(f"--port {SERVE_PORT}", f"--port {port}")
    script = script.replace(f"localhost:{SERVE_PORT}/", f"localhost:{port}/")
    stop_all = "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"  # should a command fail
    ran = _run(["bash", "-c", f"set -euo pipefail\n{stop_all}\n{script}"], tmp_path, 240)
    assert "model fraud" in ran  # models show
    assert "wrote 1,000 predictions to scored.csv" in ran
    answer = json.loads(next(line for line in ran.splitlines() if '"predictions"' in line))
    assert (answer["model"], answer["version"], len(answer["predictions"])) == ("fraud", 3, 2)
    assert "/ui: 200 text/html" in ran
    results = [json.loads(line) for line in ran.splitlines() if line.startswith('{"id"')]
    assert len(results) == 3
    assert {r["model"] for r in results} == {"fraud"}
    assert "fraud@production rolled back to v2" in ran
    assert not (home / "nats" / "server.json").exists()  # the scorer stopped the broker


def test_a_failed_user_task_ends_the_wait_for_a_promotion_at_once() -> None:
    """A user task that failed stops the loop's wait with its error, before the registry is
    read (none is given here), not after the users' 100 s bound."""

    async def broken() -> TrafficStats:
        raise UnavailableError("the broker went away")

    async def main() -> None:
        users = [asyncio.create_task(broken())]
        monitoring = asyncio.create_task(asyncio.sleep(60))
        await asyncio.sleep(0)
        try:
            with pytest.raises(UnavailableError, match="the broker went away"):
                await _until_swapped(None, 2, users, monitoring, (Channel("HTTP"),))  # type: ignore[arg-type]
        finally:
            monitoring.cancel()
            await asyncio.gather(monitoring, return_exceptions=True)

    asyncio.run(main())


def test_the_loops_teardown_ends_whatever_its_users_and_monitor_do(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A user that ignores its cancellation is left behind and a monitor that does not stop
    is cancelled: the step's teardown is bounded (no demo hangs in it); a finished user's
    result and a failed one's error still come back."""
    monkeypatch.setattr(loop_module, "STOP_WAIT_S", 0.05)
    release = asyncio.Event()

    async def stubborn() -> TrafficStats:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        raise AssertionError("not reached while the teardown waits")

    async def broken() -> TrafficStats:
        raise UnavailableError("the broker went away")

    async def main() -> tuple[list[Any], bool]:
        users = [asyncio.create_task(t()) for t in (stubborn, broken)]
        users.append(asyncio.create_task(asyncio.sleep(0, result="done")))  # type: ignore[arg-type]
        monitor = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        outcomes = await _ended(users)
        await _stopped(monitor, 0.05)
        release.set()
        await asyncio.gather(*users, return_exceptions=True)
        return outcomes, monitor.cancelled()

    with caplog.at_level(logging.WARNING, logger=loop_module.__name__):
        (left, failed, done), cancelled = asyncio.run(main())
    assert left is None
    assert isinstance(failed, UnavailableError)
    assert done == "done"
    assert cancelled
    assert "did not end when cancelled" in caplog.text
    assert "did not stop within 0.05 s" in caplog.text


def test_a_monitor_that_failed_is_raised_when_the_loop_stops() -> None:
    async def failing() -> None:
        raise RuntimeError("lease lost")

    async def main() -> None:
        monitor = asyncio.create_task(failing())
        await _stopped(monitor, 5)

    with pytest.raises(RuntimeError, match="lease lost"):
        asyncio.run(main())


def test_the_monitors_event_lines_are_quiet_during_the_loop_and_its_warnings_are_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger(Monitor.__module__)
    with caplog.at_level(logging.WARNING), _quiet_event_lines():
        log.warning("%s v%s: %s %s", "fraud", 2, "performance.degraded", "k")
        log.warning("%s: retrain %s: %s", "fraud", "skipped", "cooldown")
        log.warning("monitor cycle failed, trying again: %s", "boom")
    assert [r.getMessage() for r in caplog.records] == ["monitor cycle failed, trying again: boom"]
    with caplog.at_level(logging.WARNING):
        log.warning("%s v%s: %s %s", "fraud", 2, "drift.detected", "k")
    assert caplog.records[-1].getMessage() == "fraud v2: drift.detected k"

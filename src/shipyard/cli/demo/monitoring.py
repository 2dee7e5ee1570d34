"""The monitoring step of ``shipyard demo``: ground truth for about half of the predictions
the demo made, the monitor's verdict on them, then a drifted set sent through the server and
the scorers with labels too, and the monitor's verdict again.

The first phase labels the held-out transactions the stream step scored (their ids are the
demo's); nothing in them has drifted, so the monitor must raise no drift event. The second
phase sends transactions whose features moved (``drift_fraud``'s ``many`` scenario) half over
HTTP, half through the broker, labels half of them and runs the monitor again: the count
window (the last 1,000 predictions) is all drifted rows, so the features that moved are
flagged and a ``drift.detected`` event is recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from shipyard.data import get_dataset
from shipyard.data.fraud import drift_fraud, drifted_features
from shipyard.messaging import open_broker
from shipyard.messaging.embedded import broker_url
from shipyard.monitoring.feedback import ingest_feedback
from shipyard.monitoring.log import open_prediction_log
from shipyard.monitoring.monitor import Monitor, MonitorOptions, check_log
from shipyard.monitoring.report import monitoring_report
from shipyard.registry import Registry
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings
from shipyard.stream.client import collect, publish_all
from shipyard.stream.messages import encode_rows
from shipyard.stream.process import StreamProcess
from shipyard.stream.scorer import ScorerConfig

MODEL = "fraud"
SCENARIO = "many"
HTTP_BATCH = 50
QUIET_S = 60.0
METRIC = "average_precision"


@dataclass
class Phase:
    """What one pass of the monitor found for the model's versions."""

    name: str
    labels_sent: int
    events: list[str]
    versions: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MonitorRun:
    """Both phases of the monitoring step."""

    undrifted: Phase
    drifted: Phase
    moved: list[str]


def _labels(ids: list[str], truth: pd.Series[Any], seed: int) -> list[dict[str, Any]]:
    """Ground truth for about half of the ids, drawn at random (a labeller that answers for
    some transactions only)."""
    keep = np.random.default_rng(seed).random(len(ids)) < 0.5
    return [
        {"id": i, "label": int(label)}
        for i, label, kept in zip(ids, truth.tolist(), keep, strict=True)
        if kept
    ]


def _monitor_once(registry: Registry, settings: Settings) -> list[str]:
    """One pass of the monitor over what is logged and labelled; the events it raised."""
    log = check_log(open_prediction_log(settings))
    monitor = Monitor(registry, log, settings, MonitorOptions(models=(MODEL,)))
    try:
        report = asyncio.run(monitor.cycle())
    finally:
        monitor.release()
        log.close()
    result = report.results.get(MODEL)
    return [event.kind for event in result.events] if result is not None else []


def _versions(registry: Registry) -> dict[int, dict[str, Any]]:
    return {entry["version"]: entry for entry in monitoring_report(registry, MODEL)["versions"]}


def monitor_phases(
    registry: Registry,
    settings: Settings,
    streamed_ids: list[str],
    streamed_truth: pd.Series[Any],
    *,
    rows: int,
    seed: int,
    out: Console,
) -> MonitorRun:
    """Label the streamed held-out predictions and monitor; send a drifted set over HTTP and
    the broker, label it and monitor again."""
    labels = _labels(streamed_ids, streamed_truth, seed)
    ingest_feedback(registry, MODEL, labels, source="file")
    out.print(f"ground truth for {len(labels):,} of the {len(streamed_ids):,} streamed predictions")
    first = Phase("held-out", len(labels), _monitor_once(registry, settings))
    first.versions = _versions(registry)

    fraud = get_dataset("fraud")
    frame = drift_fraud(fraud.generate(rows, seed + 300_000), SCENARIO, seed=seed)
    half = rows // 2
    over_http = frame.iloc[:half].reset_index(drop=True)
    over_broker = frame.iloc[half:].reset_index(drop=True)
    http_ids = [f"drift-http-{seed}-{i}" for i in range(len(over_http))]
    broker_ids = [f"drift-stream-{seed}-{i}" for i in range(len(over_broker))]
    features = fraud.schema.feature_names
    with ServerProcess(settings, log=settings.home / "logs" / "demo-monitor-server.log") as server:
        asyncio.run(_predict_over_http(server.url, over_http[features], http_ids))
    # The server wrote its buffered log records when it stopped.
    _score_over_broker(settings, over_broker[features], broker_ids)
    truth = pd.concat([over_http["Class"], over_broker["Class"]], ignore_index=True)
    labels = _labels(http_ids + broker_ids, truth, seed + 1)
    ingest_feedback(registry, MODEL, labels, source="file")
    out.print(
        f"{rows:,} drifted transactions ({SCENARIO}: "
        f"{len(drifted_features(SCENARIO))} features moved) scored over HTTP and the broker, "
        f"ground truth for {len(labels):,}"
    )
    second = Phase("drifted", len(labels), _monitor_once(registry, settings))
    second.versions = _versions(registry)
    return MonitorRun(first, second, drifted_features(SCENARIO))


async def _predict_over_http(url: str, frame: pd.DataFrame, ids: list[str]) -> None:
    records = frame.to_dict(orient="records")
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        for start in range(0, len(records), HTTP_BATCH):
            instances = [
                {"id": ids[i], **records[i]}
                for i in range(start, min(start + HTTP_BATCH, len(records)))
            ]
            response = await client.post(
                f"/v1/models/{MODEL}:predict", json={"instances": instances}
            )
            response.raise_for_status()


def _score_over_broker(settings: Settings, frame: pd.DataFrame, ids: list[str]) -> None:
    frame = frame.copy()
    frame.insert(0, "id", ids)
    _, bodies = encode_rows(frame)
    config = ScorerConfig(model=MODEL)
    log = settings.home / "logs" / "demo-monitor-stream.log"
    with broker_url(settings) as url:
        scorers = settings.model_copy(update={"broker_url": url})
        with StreamProcess(scorers, config, workers=1, log=log):
            asyncio.run(_publish_and_collect(url, config, bodies, set(ids)))


async def _publish_and_collect(
    url: str, config: ScorerConfig, bodies: list[bytes], ids: set[str]
) -> None:
    producer, reader = open_broker(url), open_broker(url)
    try:
        publishing = asyncio.create_task(publish_all(producer, config.queue, bodies))
        await collect(
            reader,
            config.results,
            len(bodies),
            timeout_s=QUIET_S,
            belongs=lambda record: record.get("id") in ids,
        )
        await publishing
    finally:
        await producer.close()
        await reader.close()


def _metric(snapshot: dict[str, Any], window: str) -> str:
    value = (((snapshot.get("performance") or {}).get(window) or {}).get("metrics") or {}).get(
        METRIC
    )
    return "-" if value is None else f"{value:.4f}"


def _drifted(snapshot: dict[str, Any], window: str) -> list[str]:
    """The features drifted in a window that gave a verdict (a full one)."""
    drift = (snapshot.get("drift") or {}).get(window) or {}
    if drift.get("verdict") is None:
        return []
    result = drift.get("result") or {}
    return [name for name, f in (result.get("features") or {}).items() if f.get("drifted")]


def _drift_cell(snapshot: dict[str, Any], window: str) -> str:
    drift = (snapshot.get("drift") or {}).get(window) or {}
    verdict = drift.get("verdict")
    if verdict is None:
        return "- (not full)"
    checked = len((drift.get("result") or {}).get("features") or {})
    share = f"{len(_drifted(snapshot, window))}/{checked}"
    return f"DRIFT {share}" if verdict else f"no {share}"


def monitor_tables(run: MonitorRun) -> list[Table]:
    """Per phase and version: labels, live vs offline average precision (over every
    labelled prediction and over the last 1,000 predictions) and the drift verdict with the
    share of drifted features."""
    tables = []
    for phase in (run.undrifted, run.drifted):
        table = Table(
            "version",
            "AP offline",
            "AP live",
            "AP last 1k",
            "drift last 1k",
            title=f"monitor after the {phase.name} rows (AP: {METRIC})",
            title_justify="left",
        )
        for number, entry in sorted(phase.versions.items()):
            snapshot = entry["snapshot"]
            performance = snapshot.get("performance") or {}
            offline = (performance.get("offline") or {}).get(METRIC)
            labelled = (performance.get("all") or {}).get("labelled", 0)
            table.add_row(
                f"v{number}, {labelled:,} labelled",
                "-" if offline is None else f"{offline:.4f}",
                _metric(snapshot, "all"),
                _metric(snapshot, "rows"),
                _drift_cell(snapshot, "rows"),
            )
        tables.append(table)
    return tables


def monitor_verdicts(run: MonitorRun) -> list[str]:
    """Plain sentences: no drift event on the held-out rows, the drift seen afterwards."""
    lines = []
    raised = [e for e in run.undrifted.events if e == "drift.detected"]
    lines.append(
        "held-out phase: no drift event (as it should be)"
        if not raised
        else f"held-out phase: {len(raised)} drift event(s) on undrifted data — a false alarm"
    )
    caught = sorted(
        {
            name
            for entry in run.drifted.versions.values()
            for name in _drifted(entry["snapshot"], "rows")
        }
    )
    moved = set(run.moved)
    lines.append(
        f"drifted phase: {len(moved & set(caught))} of the {len(moved)} moved features "
        f"flagged, {len(set(caught) - moved)} unmoved; events: "
        f"{', '.join(run.drifted.events) or 'none'}"
    )
    return lines

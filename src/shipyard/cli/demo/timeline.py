"""What the loop step of ``shipyard demo`` prints: its timeline in seconds since the traffic
started (the users' clock and the registry's events), the gate's figures, the users' counts,
and plain verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from shipyard.cli.demo.loop import (
    HTTP_USERS,
    LIMIT_S,
    LOOP_EVENTS,
    MODEL,
    SCENARIO,
    STREAM_USERS,
    LoopRun,
)
from shipyard.monitoring.report import event_document, event_line
from shipyard.traffic.summary import latency_summary

if TYPE_CHECKING:
    from shipyard.registry.events import EventRecord


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:5.1f}"


def _evidence(event: EventRecord) -> str:
    """The event's line as ``shipyard monitor events`` shows it, with the version where
    that line leaves it out."""
    line = event_line(event_document(event))
    evidence = event.evidence
    if event.kind.startswith(("drift.", "performance.")):
        line = f"v{event.version}: {line}"
    elif event.kind == "retrain.trained" and evidence.get("candidate") is not None:
        line = f"v{evidence['candidate']}: {line}"
    elif event.kind == "retrain.gated":
        line = f"v{(evidence.get('candidate') or {}).get('version')} {line}"
    if event.kind.startswith("performance.") and "live" in evidence:
        line += " (no retrain on this alone, in the demo)"
    return line


def timeline(run: LoopRun) -> list[tuple[float | None, str, str]]:
    """(seconds, what, detail) of the loop, in time order."""
    rows: list[tuple[float | None, str, str]] = [
        (0.0, "traffic started", f"{HTTP_USERS} users over HTTP, {STREAM_USERS} via the broker"),
        (run.at(run.drift_started), "drift started", f"{SCENARIO} rows from now on"),
    ]
    for event in run.events:
        rows.append((run.at(event.at), event.kind, _evidence(event)))
    if run.new is not None:
        for channel in (run.http, run.stream):
            first = channel.first_answer(run.new)
            rows.append((run.at(first), f"first answer from v{run.new}", f"{channel.name}"))
    rows.append((run.at(run.stopped), "traffic stopped", ""))
    return sorted(rows, key=lambda row: float("inf") if row[0] is None else row[0])


def timeline_table(run: LoopRun) -> Table:
    """The loop as seconds since the traffic started."""
    table = Table(
        "s",
        "what",
        "detail",
        title="the loop (seconds since the traffic started; events as `shipyard monitor "
        f"events {MODEL}` shows them)",
        title_justify="left",
    )
    table.columns[0].justify = "right"
    for seconds, what, detail in timeline(run):
        style = "bold" if what in LOOP_EVENTS or what.startswith("first answer") else ""
        table.add_row(_s(seconds), what, detail, style=style)
    return table


def gate_table(run: LoopRun) -> Table | None:
    """Production and candidate on the same held-out labelled rows (the gate's figures)."""
    gated = run.gated()
    if gated is None:
        return None
    evidence = gated.evidence
    candidate, current = evidence.get("candidate") or {}, evidence.get("current") or {}
    holdout = evidence.get("holdout") or {}
    table = Table(
        title=f"the gate: both versions on the same {holdout.get('rows', 0):,} newest labelled "
        "rows (the candidate did not train on them)",
        title_justify="left",
        caption=f"{evidence.get('metric')} must gain {evidence.get('min_delta')}: "
        f"{'won' if evidence.get('won') else 'lost'} by {evidence.get('gain', 0):+.4f}",
        caption_justify="left",
    )
    table.add_column()
    table.add_column(f"v{current.get('version')} (production)", justify="right")
    table.add_column(f"v{candidate.get('version')} (candidate)", justify="right")
    old, new = current.get("metrics") or {}, candidate.get("metrics") or {}
    for name in ("average_precision", "roc_auc", "f1", "precision", "recall"):
        if name in old or name in new:
            table.add_row(name, _metric(old.get(name)), _metric(new.get(name)))
    return table


def _metric(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def traffic_table(run: LoopRun) -> Table:
    """Per channel: requests, failures, latency, labels, answers by version."""
    table = Table(
        "users",
        "requests",
        "failed",
        "p50 / p99 ms",
        "labels sent",
        "labels failed",
        "answers by version",
        title="the users",
        title_justify="left",
    )
    for channel in (run.http, run.stream):
        stats = channel.stats
        latency = latency_summary(stats.latencies)
        p50, p99 = latency["p50"] or 0.0, latency["p99"] or 0.0
        table.add_row(
            channel.name,
            f"{stats.requests:,}",
            f"{channel.failed:,}",
            f"{p50:.1f} / {p99:.1f}",
            f"{stats.labels_sent:,}",
            f"{stats.labels_failed:,}",
            ", ".join(f"v{v}: {n:,}" for v, n in sorted(channel.stats.versions.items())),
        )
    return table


def loop_verdicts(run: LoopRun) -> list[str]:
    """Plain sentences: what the loop did, failures, and how long drift took to be undone."""
    lines = []
    drift = run.at(run.drift_started)
    early = [
        e for e in run.events if e.kind == "drift.detected" and drift is not None
        and (run.at(e.at) or 0.0) < drift
    ]  # fmt: skip
    if early:
        lines.append(f"{len(early)} drift event(s) before the drift started — a false alarm")
    requests = run.http.stats.requests + run.stream.stats.requests
    if run.failed:
        errors = {**run.http.request_errors}
        for kind, n in run.stream.request_errors.items():
            errors[kind] = errors.get(kind, 0) + n
        lines.append(f"{run.failed:,} of {requests:,} requests FAILED: {errors}")
    else:
        lines.append(f"0 failed requests of {requests:,} (HTTP and broker)")
    if run.labels_failed:
        lines.append(f"{run.labels_failed:,} labels could not be sent")
    if run.new is None:
        gated = run.gated()
        if gated is None:
            why = "no retrain finished"
        elif gated.evidence.get("won"):
            why = "the candidate won the gate but was not promoted"
        else:
            why = "the candidate lost the gate"
        lines.append(f"no new version was promoted within {LIMIT_S:g} s ({why})")
        return lines
    lines.extend(run.problems)
    served = [c.first_answer(run.new) for c in (run.http, run.stream)]
    if drift is not None and all(s is not None for s in served):
        last = max(run.at(s) or 0.0 for s in served)
        lines.append(
            f"drift onset → v{run.new} answering on HTTP and the broker: {last - drift:.1f} s"
        )
    return lines


def loop_failure(run: LoopRun) -> str | None:
    """Why the loop did not close, in a line; None when it did."""
    reasons = []
    if run.new is None:
        reasons.append(f"no new version was promoted within {LIMIT_S:g} s")
    if run.failed:
        reasons.append(f"{run.failed:,} requests failed")
    reasons.extend(run.problems)
    return "; ".join(reasons) if reasons else None

"""What the monitor knows about a model, as one JSON document (the HTTP route and
``shipyard monitor report`` both show it)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.registry import Registry
    from shipyard.registry.events import EventRecord

STATUS_CURSOR = "monitor"
"""The store cursor where the monitor keeps a model's status: ``{owner, error}``."""


def event_document(event: EventRecord) -> dict[str, Any]:
    """An event as JSON: ``{id, model, version, kind, key, at, evidence}`` (also what the
    monitor publishes to ``<model>.events``)."""
    document = asdict(event)
    document["at"] = event.at.isoformat()
    return document


def latest_events(registry: Registry, model: str, count: int) -> list[EventRecord]:
    """The model's ``count`` latest events, oldest first."""
    if count < 1:
        return []
    return registry.monitoring.events(model, limit=count, newest_first=True)[::-1]


def monitoring_report(
    registry: Registry, model: str, *, events: int = 20, now: datetime | None = None
) -> dict[str, Any]:
    """Per version the latest snapshot and events, the feedback counts, who monitors the
    model and its last error (``monitor``: ``{owner, error}``, error None while it works).
    ``NotFoundError`` for an unknown model; a model never monitored has no versions and a
    ``hint``."""
    info = registry.get_model(model)
    store = registry.monitoring
    snapshots = store.snapshots(model)
    recent = latest_events(registry, model, events)
    lease = store.lease(model)
    now = now or datetime.now(UTC)
    aliases: dict[int, list[str]] = {}
    for alias, number in info.aliases.items():
        aliases.setdefault(number, []).append(alias)
    versions = [
        {
            "version": number,
            "aliases": sorted(aliases.get(number, [])),
            "snapshot": snapshot,
            "events": [event_document(e) for e in recent if e.version == number],
        }
        for number, snapshot in sorted(snapshots.items(), reverse=True)
    ]
    document: dict[str, Any] = {
        "model": model,
        "versions": versions,
        "events": [event_document(e) for e in recent],
        "feedback": store.feedback_counts(model),
        "monitor": store.cursor(model, STATUS_CURSOR),
        "lease": None
        if lease is None
        else {
            "owner": lease[0],
            "expires_at": lease[1].isoformat(),
            "fresh": lease[1] > now,
        },
    }
    if not versions:
        document["hint"] = (
            f"no monitor has watched {model!r} yet: run `shipyard monitor --models {model}` "
            "(or `--once` for a single pass) while its predictions are logged"
        )
    return document


def event_line(event: dict[str, Any]) -> str:
    """An event's evidence in a line (an ``event_document``), as ``shipyard monitor events``
    shows it."""
    evidence = event["evidence"]
    kind = event["kind"]
    if kind == "retrain.gated":
        verdict = "won" if evidence.get("won") else "lost"
        candidate, current = evidence.get("candidate") or {}, evidence.get("current") or {}
        shadow = evidence.get("shadow")
        part = shadow if isinstance(shadow, dict) else evidence.get("holdout")
        rows = (part or {}).get("rows")
        where = "labelled live rows in shadow" if shadow else "held-out rows"
        return (
            f"{verdict}: {evidence.get('metric')} {shown_value(candidate.get('value'))} (v"
            f"{candidate.get('version')}) vs {shown_value(current.get('value'))} (v"
            f"{current.get('version')}) on {rows} {where}"
        )
    if kind == "retrain.shadowing":
        return (
            f"v{evidence.get('candidate')} in shadow beside v{evidence.get('production')} "
            f"until {evidence.get('labelled')} labelled, by {evidence.get('deadline')}"
        )
    if kind in ("model.promoted", "model.rolled_back"):
        by = f" by {evidence['actor']}" if evidence.get("actor") else ""
        return f"{evidence.get('alias')}: v{evidence.get('from')} → v{evidence.get('to')}{by}"
    if kind == "retrain.trained":
        rows = evidence.get("rows") or {}
        total = (rows.get("train") or 0) + (rows.get("original") or 0)
        return f"run {str(evidence.get('run_id'))[:12]}, trained on {total:,} rows"
    if kind == "retrain.triggered":
        trigger = evidence.get("trigger") or {}
        return f"by {trigger.get('kind')} ({trigger.get('key')})"
    if kind.startswith("drift.") and "share" in evidence:
        return f"share {shown_value(evidence.get('share'))} of features drifted"
    if kind.startswith("performance.") and "live" in evidence:
        live, offline = shown_value(evidence.get("live")), shown_value(evidence.get("offline"))
        return f"{evidence.get('metric')} {live} live vs {offline} offline"
    return str(evidence.get("reason") or evidence.get("resolution") or "")


def shown_value(value: Any) -> str:
    """A figure as the reports print it: 4 decimals, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)

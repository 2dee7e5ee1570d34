"""``shipyard monitor``: watch live performance and drift; ``shipyard monitor report NAME``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from shipyard.cli.context import (
    Command,
    Group,
    MetricsHostOption,
    console,
    err_console,
    open_registry,
    serve_metrics,
    settings_of,
)
from shipyard.cli.queues import BrokerOption
from shipyard.errors import ShipyardError
from shipyard.monitoring.report import shown_value

if TYPE_CHECKING:
    from shipyard.monitoring.monitor import CycleReport

app = typer.Typer(
    cls=Group,
    help="Watch models' live performance and drift (runs until stopped); `report NAME` shows "
    "what it found.",
    invoke_without_command=True,
)


@app.callback()
def monitor(
    ctx: typer.Context,
    models: Annotated[
        str | None,
        typer.Option(
            metavar="A,B", help="Models to watch (default: every model, re-listed as they come)"
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", help="Serve Prometheus metrics on --metrics-host:PORT (0: any)"
        ),
    ] = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    broker: BrokerOption = None,
    no_broker: Annotated[
        bool,
        typer.Option(
            "--no-broker",
            help="Use no broker: no <model>.feedback queue is read and events wait in the "
            "registry database until a monitor with a broker publishes them",
        ),
    ] = False,
    window_rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Count window: the last N predictions (overrides "
            "the spec's monitoring.windows.rows)",
        ),
    ] = None,
    window_minutes: Annotated[
        float | None,
        typer.Option(min=0.001, metavar="T", help="Time window: the last T minutes"),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over what is there, then exit")
    ] = False,
    no_retrain: Annotated[
        bool,
        typer.Option(
            "--no-retrain",
            help="Watch only: retrain no model, even when its spec has a retrain: section",
        ),
    ] = False,
) -> None:
    """Own models by lease, read their prediction log and feedback, and record live
    performance, drift, snapshots and events until stopped (Ctrl-C, SIGTERM)."""
    if ctx.invoked_subcommand is not None:
        return

    from shipyard.messaging.embedded import broker_url
    from shipyard.monitoring.log import open_prediction_log
    from shipyard.monitoring.metrics import MonitorMetrics
    from shipyard.monitoring.monitor import Monitor, MonitorOptions, check_log
    from shipyard.pipeline.retrain import PipelineRetrainer

    settings = settings_of(ctx)
    if broker is not None:
        settings = settings.model_copy(update={"broker_url": broker})
    names = tuple(n.strip() for n in models.split(",") if n.strip()) if models else None
    log = check_log(open_prediction_log(settings))
    metrics = MonitorMetrics()
    if metrics_port is not None:
        bound = serve_metrics(metrics_port, metrics_host, metrics.registry)
        err_console.print(f"metrics on http://{metrics_host}:{bound}/metrics")
    with contextlib.ExitStack() as stack:
        # Like `shipyard stream` and `publish`: the home's embedded NATS when none is given.
        url = None if no_broker else stack.enter_context(broker_url(settings))
        options = MonitorOptions(
            models=names, window_rows=window_rows, window_minutes=window_minutes, broker_url=url
        )
        registry = stack.enter_context(open_registry(ctx))
        retrainer = (
            None if no_retrain else PipelineRetrainer(registry, log, settings, owner=options.owner)
        )
        runner = Monitor(registry, log, settings, options, metrics=metrics, retrainer=retrainer)
        if once:
            report = asyncio.run(runner.run(once=True))
            assert report is not None
            _print_cycle(report)
            _exit_on_errors(report)
            return
        err_console.print(f"monitoring as {options.owner}; Ctrl-C stops")
        asyncio.run(_forever(runner))


async def _forever(runner: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runner.run(stop=stop)


def _exit_on_errors(report: CycleReport) -> None:
    """A pass in which a model failed exits with that error's code (the first one's)."""
    if not report.errors:
        return
    codes = []
    for model, error in report.errors.items():
        err_console.print(f"[red]{model}: {type(error).__name__}: {error}[/]")
        codes.append(error.exit_code if isinstance(error, ShipyardError) else 1)
    raise typer.Exit(codes[0])


def _print_cycle(report: CycleReport) -> None:
    if not report.owned:
        console.print("no model to monitor (or each is owned by another running monitor)")
    for model in report.owned:
        result = report.results.get(model)
        if result is None:
            continue  # it failed: _exit_on_errors names it
        settled = ", ".join(f"{k} {v}" for k, v in sorted(result.feedback.items())) or "none"
        console.print(
            f"{model}: {result.rows:,} new predictions, feedback settled: {settled}, "
            f"events: {', '.join(e.kind for e in result.events) or 'none'}"
        )
    for model, outcome in report.retrains.items():
        console.print(f"{model}: retrain {outcome.status}: {escape(outcome.reason)}")


@app.command("events", cls=Command)
def events(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, one document")] = False,
    kind: Annotated[
        str | None,
        typer.Option(metavar="KIND", help="Only this kind, e.g. retrain.gated, drift.detected"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="The latest N events")] = 50,
) -> None:
    """The model's events, newest last: drift and performance episodes, and every retrain
    decision (triggered, skipped and why, trained, gated, promoted) with its evidence."""
    from shipyard.monitoring.report import event_document, event_line

    with open_registry(ctx) as registry:
        found = registry.monitoring.events(name, kind=kind, limit=limit, newest_first=True)[::-1]
    documents = [event_document(event) for event in found]
    if as_json:
        console.print_json(json.dumps(documents))
        return
    if not documents:
        what = f"no {kind} event" if kind else "no event"
        console.print(f"{name}: {what} yet")
        return
    table = Table("id", "at (UTC)", "version", "kind", "what", title=f"{name}: events")
    table.columns[-1].overflow = "fold"
    for document in documents:
        table.add_row(
            str(document["id"]),
            document["at"][:19].replace("T", " "),
            shown_value(document["version"]),
            document["kind"],
            escape(event_line(document)),
        )
    console.print(table)


@app.command("report", cls=Command)
def report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document")] = False,
    top: Annotated[int, typer.Option(min=1, metavar="N", help="Drifted features shown")] = 10,
) -> None:
    """Per version: live vs offline metrics, windows, drifted features and events."""
    from shipyard.monitoring.report import monitoring_report

    with open_registry(ctx) as registry:
        document = monitoring_report(registry, name)
    if as_json:
        console.print_json(json.dumps(document))
        return
    _print_report(document, top)


def _severity(feature: dict[str, Any]) -> float:
    """How far past its threshold a feature's statistic is (larger: more drifted)."""
    statistic, threshold = feature.get("statistic"), feature.get("threshold")
    if statistic is None or not threshold:
        return 0.0
    from shipyard.monitoring.drift import P_VALUE_METHODS

    if feature.get("method") in P_VALUE_METHODS:
        return float(threshold) / max(float(statistic), 1e-300)
    return float(statistic) / float(threshold)


def _print_report(document: dict[str, Any], top: int) -> None:
    model = document["model"]
    lease = document["lease"]
    holder = (
        "none" if lease is None else f"{lease['owner']} ({'live' if lease['fresh'] else 'expired'})"
    )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(document["feedback"].items()))
    console.print(f"[bold]{model}[/]  monitor: {holder}  feedback: {counts or 'none'}")
    error = (document.get("monitor") or {}).get("error")
    if error:
        console.print(
            f"[red]last error ({error['failures']} in a row, {error['at']}):[/] "
            f"{escape(error['error'])}"
        )
    if "hint" in document:
        console.print(document["hint"])
        return
    for entry in document["versions"]:
        _print_version(model, entry, top)


def _print_version(model: str, entry: dict[str, Any], top: int) -> None:
    snapshot = entry["snapshot"]
    aliases = f" ({', '.join(entry['aliases'])})" if entry["aliases"] else ""
    title = f"{model}:{entry['version']}{aliases} — updated {snapshot.get('updated_at', '-')}"
    performance = snapshot.get("performance", {})
    offline = performance.get("offline") or {}
    table = Table(
        "metric",
        "offline",
        "live (all)",
        "live (rows)",
        "live (time)",
        title=title,
        title_justify="left",
    )
    names: list[str] = list(offline)
    for window in ("all", "rows", "time"):
        for metric in (performance.get(window) or {}).get("metrics") or {}:
            if metric not in names:
                names.append(metric)
    for metric in names:
        table.add_row(
            metric,
            shown_value(offline.get(metric)),
            *(
                shown_value(((performance.get(p) or {}).get("metrics") or {}).get(metric))
                for p in ("all", "rows", "time")
            ),
        )
    console.print(table)
    windows = Table(
        "window", "rows", "labelled", "coverage", "delay p50/p90 s", "start", "end", "drift"
    )
    for kind in ("all", "rows", "time"):
        part = performance.get(kind) or {}
        bounds = (snapshot.get("windows") or {}).get(kind, {})
        delay = part.get("delay") or {}
        verdict = (snapshot.get("dataset_drift") or {}).get(kind)
        windows.add_row(
            kind,
            shown_value(part.get("predicted")),
            shown_value(part.get("labelled")),
            shown_value(part.get("coverage")),
            f"{shown_value(delay.get('p50_s'))}/{shown_value(delay.get('p90_s'))}",
            bounds.get("start") or "-",
            bounds.get("end") or "-",
            "-" if verdict is None else ("DRIFT" if verdict else "ok"),
        )
    console.print(windows)
    drifted = []
    for kind, drift in (snapshot.get("drift") or {}).items():
        for feature in ((drift.get("result") or {}).get("features") or {}).values():
            if feature.get("drifted"):
                drifted.append((kind, feature))
    if drifted:
        table = Table(
            "window",
            "feature",
            "method",
            "statistic",
            "threshold",
            title="drifted features",
            title_justify="left",
        )
        drifted.sort(key=lambda item: -_severity(item[1]))
        for kind, feature in drifted[:top]:
            table.add_row(
                kind,
                feature["feature"],
                feature["method"],
                shown_value(feature.get("statistic")),
                shown_value(feature.get("threshold")),
            )
        console.print(table)
    for event in entry["events"]:
        console.print(f"  {event['at']}  {event['kind']}  {event['key']}")

"""The live view of a run in the terminal (Rich): requests and their rate, latency, errors
by kind, labels, failovers between addresses, versions seen, drift; the same table once
more at the end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from shipyard.traffic.runner import TrafficRun

REFRESH_S = 0.5
SHOWN_ERRORS = 4


@dataclass
class _Rate:
    """Requests per second over the last refresh."""

    requests: int = 0
    at: float = 0.0
    value: float = 0.0

    def update(self, requests: int, now: float) -> float:
        if self.at and now > self.at:
            self.value = (requests - self.requests) / (now - self.at)
        self.requests, self.at = requests, now
        return self.value


def view(run: TrafficRun, now: float, rate: float | None, title: str) -> Table:
    """The run's figures as a two-column table; ``rate`` None: the whole run's average."""
    stats = run.users.stats
    config = run.config
    elapsed = stats.elapsed(now)
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    bound = []
    if config.bounded_duration_s is not None:
        bound.append(f"{config.bounded_duration_s:g} s")
    if config.requests is not None:
        bound.append(f"{config.requests:,} requests")
    table.add_row("elapsed", f"{elapsed:,.1f} s of {' or '.join(bound)}")
    shown_rate = rate if rate is not None else (stats.requests / elapsed if elapsed else 0.0)
    table.add_row(
        "requests",
        f"{stats.requests:,} ({stats.succeeded:,} answered), "
        f"{shown_rate:,.0f} req/s{' now' if rate is not None else ''}",
    )
    p50, p99 = stats.recent_percentiles_ms()
    table.add_row("latency", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    errors = sum(stats.errors.values())
    kinds = ", ".join(f"{kind}: {n:,}" for kind, n in stats.errors.most_common(SHOWN_ERRORS))
    table.add_row("errors", f"{errors:,}" + (f" ({kinds})" if kinds else ""))
    if config.label_probability > 0:
        table.add_row(
            "labels",
            f"{stats.labels_sent:,} sent, {len(run.users.pending):,} waiting for their delay, "
            f"{stats.labels_failed:,} failed"
            + (f", {stats.labels_wrong:,} wrong on purpose" if config.label_noise else ""),
        )
    if len(run.destination.urls) > 1 and config.protocol.is_http:
        answered = ", ".join(f"{url}: {n:,}" for url, n in stats.addresses.most_common())
        table.add_row(
            "failovers", f"{stats.failovers:,}" + (f" (answered by {answered})" if answered else "")
        )
    versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(stats.versions.items()))
    table.add_row(
        "versions seen",
        versions or ("not named by MLflow answers" if config.protocol == "mlflow" else "none yet"),
    )
    if config.drift_at_s is not None:
        if stats.drift_started_at is None:
            drift = f"{run.pool.scenario} from {config.drift_at_s:g} s"
        else:
            started = stats.drift_started_at - stats.started_at
            drift = f"{run.pool.scenario} since {started:.1f} s"
        table.add_row("drift", drift)
    return table


async def show_live(run: TrafficRun, console: Console, title: str) -> None:
    """Refresh the view until cancelled."""
    loop = asyncio.get_running_loop()
    rate = _Rate()
    with Live(console=console, auto_refresh=False, transient=True) as live:
        while True:
            now = loop.time()
            speed = rate.update(run.users.stats.requests, now)
            live.update(view(run, now, speed, title), refresh=True)
            await asyncio.sleep(REFRESH_S)

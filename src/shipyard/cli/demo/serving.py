"""The serving step of ``shipyard demo``: a real server under load, a promotion mid-traffic.

The load is ``shipyard traffic``'s engine (``traffic.runner``): closed-loop users that send
their next request when the last is answered, half over Open Inference Protocol, half over
MLflow scoring, each with its own keep-alive connection.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from shipyard.registry import DEFAULT_ALIAS, Registry
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings
from shipyard.traffic.config import Protocol, TrafficConfig
from shipyard.traffic.rows import RowPool, Rows
from shipyard.traffic.runner import Destination, prepared, run_on_uvloop
from shipyard.traffic.summary import TrafficStats, latency_summary
from shipyard.traffic.users import Answer, Visit

# More users in this process measure the client's own contention, not the server; 8 (4 per
# protocol) keep one server worker busy.
USERS_PER_PROTOCOL = 4
MODEL = "fraud"


@dataclass
class LoadFigures:
    """The users' figures over both protocols."""

    seconds: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    """Answers by version, over both protocols."""

    @property
    def sent(self) -> int:
        """Requests answered or failed."""
        return len(self.latencies) + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Requests per second over the run."""
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile of answered requests, in milliseconds."""
        found = latency_summary(self.latencies).get(f"p{q:g}")
        return 0.0 if found is None else found

    def add(self, stats: TrafficStats) -> None:
        """Count one protocol's users in."""
        self.latencies.extend(stats.latencies)
        self.errors.update(stats.errors)
        self.versions.update(stats.versions)
        self.seconds = max(self.seconds, stats.elapsed(stats.ended_at or stats.started_at))


@dataclass(frozen=True)
class SwapResult:
    """What the serving demo measured."""

    report: LoadFigures
    promoted: str
    promoted_after: int


def rows_of(frame: pd.DataFrame, features: list[str]) -> RowPool:
    """A pool of the frame's feature rows, without labels (the serving step sends none)."""
    values = frame[features].to_numpy(np.float64)
    return RowPool(Rows(list(features), values, None), source="the held-out rows")


async def _traffic_with_swap(
    registry: Registry, url: str, pool: RowPool, total: int, challenger: str, seed: int
) -> SwapResult:
    halfway = asyncio.Event()
    answered = 0

    def count(_slot: int, _visit: Visit, answer: Answer) -> None:
        nonlocal answered
        if answer.failure is None:
            answered += 1
            if answered >= total // 2:
                halfway.set()

    configs = [
        TrafficConfig(
            model=MODEL,
            protocol=protocol,
            users=USERS_PER_PROTOCOL,
            requests=total // 2 + (total % 2 if protocol is Protocol.OIP else 0),
            seed=seed + n,
        )
        for n, protocol in enumerate((Protocol.OIP, Protocol.MLFLOW))
    ]
    destination = Destination(url=url)
    figures = LoadFigures()
    async with (
        prepared(configs[0], pool, destination, trace=count) as oip,
        prepared(configs[1], pool, destination, trace=count) as mlflow,
    ):
        runs = [asyncio.create_task(run.users.run()) for run in (oip, mlflow)]
        waiter = asyncio.create_task(halfway.wait())
        await asyncio.wait([*runs, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        promoted_after = answered
        await asyncio.to_thread(registry.promote, challenger, DEFAULT_ALIAS, actor="demo")
        for stats in await asyncio.gather(*runs):
            figures.add(stats)
    return SwapResult(figures, challenger, promoted_after)


def serve_and_swap(
    registry: Registry,
    settings: Settings,
    rows: pd.DataFrame,
    features: list[str],
    challenger: str,
    *,
    total: int,
    seed: int,
    out: Console,
) -> SwapResult:
    """Start a server, send ``total`` requests, promote ``challenger`` halfway through."""
    log = settings.home / "logs" / "demo-server.log"
    pool = rows_of(rows, features)
    with ServerProcess(settings, log=log) as server:
        out.print(
            f"server on {server.url}; {total:,} single-row requests from "
            f"{2 * USERS_PER_PROTOCOL} simulated users (`shipyard traffic`'s engine)"
        )
        # The client's own full garbage collections (pandas, models in this process) would
        # otherwise show up as server latency.
        from shipyard.inference.runtime import ordinary_runtime, serving_runtime

        serving_runtime(switch_interval_s=None)  # as before: only the collector's settings
        try:
            result = run_on_uvloop(
                lambda: _traffic_with_swap(registry, server.url, pool, total, challenger, seed)
            )
        finally:
            ordinary_runtime()
        return result


def swap_table(result: SwapResult) -> Table:
    """Throughput, latency, errors and which versions answered."""
    report = result.report
    table = Table(title="serving under load", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("requests", f"{report.sent:,} (OIP and MLflow, single rows)")
    table.add_row("throughput", f"{report.throughput:,.0f} req/s")
    table.add_row("latency p50 / p99", f"{report.percentile_ms(50):.1f} / "
                  f"{report.percentile_ms(99):.1f} ms")  # fmt: skip
    table.add_row("errors", str(sum(report.errors.values())) + (
        f" ({dict(report.errors)})" if report.errors else ""))  # fmt: skip
    table.add_row("promoted", f"{result.promoted} after {result.promoted_after:,} answers")
    versions = ", ".join(f"v{v}: {n:,}" for v, n in sorted(report.versions.items()))
    table.add_row("answers by version", versions)
    return table

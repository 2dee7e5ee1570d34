"""The serving step of ``shipyard demo``: a real server under load, a promotion mid-traffic."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from shipyard.registry import DEFAULT_ALIAS, Registry
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings
from shipyard.traffic.load import LoadReport, Request, run_load

# More concurrent httpx clients in one process measure the client's own contention, not the
# server (16 gave p99 ~170 ms where wrk measures 9 ms); 8 keep the server busy.
CLIENTS = 8


@dataclass(frozen=True)
class SwapResult:
    """What the serving demo measured."""

    report: LoadReport
    promoted: str
    promoted_after: int


def _requests(rows: pd.DataFrame, features: list[str]) -> list[Request]:
    """Alternate Open Inference Protocol and MLflow single-row requests."""
    requests = []
    for values in rows[features].to_numpy(np.float32).tolist():
        requests.append(
            Request(
                "/v2/models/fraud/infer",
                {"inputs": [{"name": "input", "shape": [1, len(values)], "datatype": "FP32",
                             "data": values}]},
                lambda response: str(response["model_version"]),
            )
        )  # fmt: skip
        requests.append(
            Request("/invocations", {"dataframe_split": {"columns": features, "data": [values]}})
        )
    return requests


async def _traffic_with_swap(
    registry: Registry, url: str, requests: list[Request], total: int, challenger: str
) -> SwapResult:
    halfway = asyncio.Event()
    answered = 0

    def progress(n: int) -> None:
        nonlocal answered
        answered += n
        if answered >= total // 2:
            halfway.set()

    load = asyncio.create_task(
        run_load(url, requests, total=total, concurrency=CLIENTS, progress=progress)
    )
    waiter = asyncio.create_task(halfway.wait())
    await asyncio.wait([load, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    promoted_after = answered
    await asyncio.to_thread(registry.promote, challenger, DEFAULT_ALIAS, actor="demo")
    report = await load
    return SwapResult(report, challenger, promoted_after)


def serve_and_swap(
    registry: Registry,
    settings: Settings,
    rows: pd.DataFrame,
    features: list[str],
    challenger: str,
    *,
    total: int,
    out: Console,
) -> SwapResult:
    """Start a server, send ``total`` requests, promote ``challenger`` halfway through."""
    log = settings.home / "logs" / "demo-server.log"
    with ServerProcess(settings, log=log) as server:
        out.print(f"server on {server.url}; {total:,} single-row requests from {CLIENTS} clients")
        # The client's own full garbage collections (pandas, models in this process) would
        # otherwise show up as server latency.
        gc.collect()
        gc.freeze()
        return asyncio.run(
            _traffic_with_swap(registry, server.url, _requests(rows, features), total, challenger)
        )


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
    table.add_row("OIP answers by version", versions)
    return table

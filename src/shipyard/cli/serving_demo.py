"""The serving part of ``shipyard demo``: a real server under load, a promotion mid-traffic."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from shipyard.errors import UnavailableError
from shipyard.registry import Registry
from shipyard.settings import Settings
from shipyard.traffic.load import LoadReport, Request, run_load


@dataclass(frozen=True)
class SwapResult:
    """What the serving demo measured."""

    report: LoadReport
    promoted: str
    promoted_after: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def start_server(settings: Settings, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``shipyard serve -m fraud`` on a free port; returns once it is ready (bounded wait)."""
    port = _free_port()
    command = [
        sys.executable, "-m", "shipyard", "--home", str(settings.home),
        "--database-url", settings.database_url, "serve", "-m", "fraud", "--port", str(port),
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise UnavailableError(f"the demo server did not become ready; see {log}")


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

    load = asyncio.create_task(run_load(url, requests, total=total, progress=progress))
    waiter = asyncio.create_task(halfway.wait())
    await asyncio.wait([load, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    promoted_after = answered
    await asyncio.to_thread(registry.promote, challenger, "production", actor="demo")
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
    process, url = start_server(settings, settings.home / "logs" / "demo-server.log")
    try:
        out.print(f"server on {url}; {total:,} single-row requests from 16 clients")
        return asyncio.run(
            _traffic_with_swap(registry, url, _requests(rows, features), total, challenger)
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


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

"""Closed-loop HTTP load: N concurrent clients each sending its next request when the last
one is answered, for a bounded number of requests; latency, errors and versions recorded."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass(frozen=True)
class Request:
    """One request to send: path, JSON body, and how to read the answering version."""

    path: str
    body: dict[str, Any]
    version_of: Callable[[dict[str, Any]], str | None] = lambda response: None


@dataclass
class LoadReport:
    """What a load run measured."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        """Requests answered or failed."""
        return len(self.latencies) + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Requests per second over the run."""
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile of successful requests, in milliseconds."""
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else 0.0


async def run_load(
    base_url: str,
    requests: Sequence[Request],
    *,
    total: int,
    concurrency: int = 16,
    timeout_s: float = 10.0,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Send ``total`` requests (cycling through ``requests``) from ``concurrency`` clients."""
    report = LoadReport()
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for index in counter:
            request = requests[index % len(requests)]
            start = time.perf_counter()
            try:
                response = await client.post(request.path, json=request.body)
            except httpx.HTTPError as error:
                report.errors[type(error).__name__] += 1
                continue
            if response.status_code != 200:
                report.errors[f"HTTP {response.status_code}"] += 1
                continue
            report.latencies.append(time.perf_counter() - start)
            version = request.version_of(response.json())
            if version is not None:
                report.versions[version] += 1
            if progress is not None:
                progress(1)

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    report.seconds = time.perf_counter() - start
    return report

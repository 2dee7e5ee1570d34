"""The stream step of ``shipyard demo``: transactions published to the embedded broker,
scored by worker processes, results and dead letters read back and counted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
from rich.console import Console
from rich.table import Table

from shipyard.messaging import open_broker
from shipyard.messaging.embedded import broker_url
from shipyard.settings import Settings
from shipyard.stream.client import collect, dead_letter_key, publish_all
from shipyard.stream.messages import encode_rows
from shipyard.stream.process import StreamProcess
from shipyard.stream.scorer import ScorerConfig

# One message in 200 is broken on purpose (not JSON, or text where a number belongs), to
# show that bad messages end in the dead-letter queue with a reason and block nothing.
MALFORMED_EVERY = 200
QUIET_S = 60.0


@dataclass
class StreamRun:
    """What the stream demo measured."""

    published: int = 0
    malformed: int = 0
    scored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    rows: dict[str, int] = field(default_factory=dict)
    """The row of the published frame each scored id came from."""

    @property
    def throughput(self) -> float:
        """Scored messages per second, from the first publish to the last result."""
        return self.scored / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Publish-to-scored latency percentile, in milliseconds."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0


def _bodies(frame: pd.DataFrame, run: str) -> tuple[list[bytes], int]:
    frame = frame.drop(columns=["Class"], errors="ignore")
    frame.insert(0, "id", [f"demo-{run}-{i}" for i in range(len(frame))])
    _, bodies = encode_rows(frame)
    broken = 0
    for n, i in enumerate(range(MALFORMED_EVERY // 2, len(bodies), MALFORMED_EVERY)):
        record = orjson.loads(bodies[i])
        bodies[i] = (
            f"not json, {record['id']}".encode()
            if n % 2
            else orjson.dumps(record | {"Amount": "a lot"})
        )
        broken += 1
    return bodies, broken


def stream_and_count(
    settings: Settings, frame: pd.DataFrame, *, workers: int, out: Console
) -> StreamRun:
    """Start ``workers`` scorers on the embedded broker, publish ``frame`` as transactions
    (a few broken), and read every result and dead letter back."""
    run = uuid.uuid4().hex[:8]
    bodies, broken = _bodies(frame, run)
    config = ScorerConfig(model="fraud")
    log = settings.home / "logs" / "demo-stream.log"
    with broker_url(settings) as url:
        out.print(f"{workers} scorer process{'es' * (workers > 1)} on {url} (log: {log})")
        scorers = settings.model_copy(update={"broker_url": url})
        with StreamProcess(scorers, config, workers=workers, log=log):
            result = asyncio.run(_publish_and_collect(url, config, bodies, broken, run))
    result.malformed = broken
    return result


async def _publish_and_collect(
    url: str, config: ScorerConfig, bodies: list[bytes], broken: int, run: str
) -> StreamRun:
    producer, reader = open_broker(url), open_broker(url)
    try:
        started = time.perf_counter()
        publishing = asyncio.create_task(publish_all(producer, config.queue, bodies))
        scored = await collect(
            reader,
            config.results,
            len(bodies) - broken,
            timeout_s=QUIET_S,
            belongs=lambda record: str(record.get("id", "")).startswith(f"demo-{run}-"),
        )
        seconds = time.perf_counter() - started
        await publishing
        dead = await collect(
            reader,
            config.input_spec.dead_letter_name,
            broken,
            timeout_s=QUIET_S,
            key=dead_letter_key,
            belongs=lambda record: run in str(record.get("body", "")),
        )
    finally:
        await producer.close()
        await reader.close()
    first: dict[str, dict[str, Any]] = {}
    for record in scored.records:
        first.setdefault(record["id"], record)
    return StreamRun(
        published=len(bodies),
        scored=scored.distinct,
        duplicates=scored.duplicates,
        dead_lettered=dead.distinct,
        seconds=seconds,
        latencies_ms=[float(r["latency_ms"]) for r in first.values() if r["latency_ms"]],
        versions=Counter(int(r["version"]) for r in first.values()),
        reasons=Counter(
            _gist(str(r["reason"])) for r in {dead_letter_key(r): r for r in dead.records}.values()
        ),
        rows={key: int(key.rsplit("-", 1)[1]) for key in first},
    )


def _gist(reason: str) -> str:
    """A dead-letter reason without the parts that differ from message to message."""
    return reason.split(" (")[0].split(", got ")[0]


def stream_table(result: StreamRun) -> Table:
    """Counts, throughput, latency and versions of the stream demo."""
    table = Table(title="stream scoring", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("published", f"{result.published:,} ({result.malformed} malformed on purpose)")
    table.add_row("scored", f"{result.scored:,} distinct ids ({result.duplicates} duplicates)")
    table.add_row("dead-lettered", f"{result.dead_lettered:,}")
    total = result.scored + result.dead_lettered
    verdict = "nothing lost" if total == result.published else "MISSING MESSAGES"
    table.add_row("scored + dead-lettered", f"{total:,} of {result.published:,}: {verdict}")
    table.add_row("throughput", f"{result.throughput:,.0f} msg/s (first publish to last result)")
    table.add_row("latency p50 / p99", f"{result.percentile_ms(50):.1f} / "
                  f"{result.percentile_ms(99):.1f} ms (published → scored)")  # fmt: skip
    table.add_row("versions", ", ".join(f"v{v}: {n:,}" for v, n in sorted(result.versions.items())))
    for reason, count in result.reasons.most_common(3):
        table.add_row("dead-letter reason", f"{count} × {reason}")
    return table

"""``shipyard traffic``'s engine against one route, for ``benchmarks/serve.py --traffic``.

Closed-loop users with zero think time (``shipyard.traffic.users.Users``), each on its own
keep-alive connection (``shipyard.traffic.connection``), POST the bodies wrk sends and
parse every JSON answer, for ``SECONDS``; prints one JSON line: requests, errors, wall and
CPU seconds, p50 and p99. Run it pinned to a core (``taskset``), as the benchmark does.

    python traffic_engine.py URL PATH BODIES.json SECONDS USERS
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

import orjson
import uvloop

from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.connection import Connections, Endpoint
from shipyard.traffic.summary import latency_summary
from shipyard.traffic.users import Answer, LabelSource, Users


class Route:
    """A target that POSTs pre-formatted requests to one path and reads the JSON answer."""

    def __init__(self, url: str, path: str, bodies: list[bytes], users: int) -> None:
        endpoint = Endpoint.parse(url)
        headers = {"Content-Type": "application/json"}
        self.requests = [endpoint.request(path, body, headers) for body in bodies]
        self.connections = Connections(endpoint, users, timeout_s=10.0)

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        try:
            status, body = await self.connections.exchange(slot, self.requests[row])
        except OSError as error:
            return Answer(failure=type(error).__name__)
        if status != 200:
            return Answer(failure=f"HTTP {status}")
        orjson.loads(body)  # as every protocol's answer is read
        return Answer(id="-", version="bench")


async def main(url: str, path: str, bodies: list[bytes], seconds: float, users: int) -> None:
    route = Route(url, path, bodies, users)
    config = TrafficConfig(users=users, duration_s=seconds, timeout_s=10.0).check()
    engine = Users(config, route, (len(bodies), None), LabelSource(None, None), None)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    stats = await engine.run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    route.connections.close()
    latency = latency_summary(stats.latencies)
    print(
        json.dumps(
            {
                "requests": stats.requests,
                "errors": sum(stats.errors.values()),
                "seconds": wall,
                "cpu_seconds": (after.ru_utime + after.ru_stime)
                - (before.ru_utime + before.ru_stime),
                "p50_ms": latency["p50"],
                "p99_ms": latency["p99"],
            }
        )
    )


if __name__ == "__main__":
    url, path, bodies_file, seconds, users = sys.argv[1:6]
    bodies = [body.encode() for body in json.loads(Path(bodies_file).read_text())]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(url, path, bodies, float(seconds), int(users)))

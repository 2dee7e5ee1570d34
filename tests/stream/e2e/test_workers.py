"""``shipyard stream`` as real processes: one worker with its metrics, ranks under
``mpiexec``, and the pool restarting a worker that dies."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from brokers import SHARED, delete_queues
from shipyard.children import Child, free_port, free_ports, port_free
from shipyard.data import generate_fraud
from shipyard.messaging import open_broker
from shipyard.stream.client import Collected, collect, publish_all
from shipyard.stream.messages import encode_rows
from shipyard.stream.process import READY_LINE

pytestmark = pytest.mark.integration

REDIS = SHARED["redis"][2]
MESSAGES = 2_000
# Enough that both ranks get some however the OS schedules them: a worker scores 2,000
# messages in well under a second and (with the prediction log's group commits) keeps
# consuming while its acks wait, so a rank scheduled late could find the queue empty.
SHARED_MESSAGES = 20_000


@pytest.fixture
def names(service: Callable[[str, int], None]) -> Iterator[tuple[str, str]]:
    service("Redis", 6379)
    suffix = uuid.uuid4().hex[:10]
    queue, results = f"tx-{suffix}", f"results-{suffix}"
    yield queue, results
    asyncio.run(delete_queues(REDIS, [queue, f"{queue}.dead", results, f"{results}.dead"]))


def publish_and_collect(queue: str, results: str, count: int) -> Collected:
    async def run() -> Collected:
        frame = generate_fraud(count, seed=4).drop(columns=["Class"])
        _, bodies = encode_rows(frame)
        client = open_broker(REDIS)
        try:
            await publish_all(client, queue, bodies)
            return await collect(client, results, count, timeout_s=60)
        finally:
            await client.close()

    return asyncio.run(run())


def start(command: list[str], log: Path) -> Child:
    return Child(command, log=log).start()


def wait_for(child: Child, text: str, count: int = 1) -> None:
    """Until ``text`` is logged ``count`` times (raises with the log after 60 s)."""
    child.wait_ready(child.logged(text, count), timeout_s=60)


def stop(child: Child, signum: int = signal.SIGTERM) -> int | None:
    """Send ``signum``; the exit code, or -9 if it had to be killed after 30 s."""
    return child.stop(30, signum=signum)


def scored_by_worker(metrics: str) -> dict[str, float]:
    found = re.findall(
        r'^shipyard_stream_messages_scored_total\{[^}]*worker="(\d+)"[^}]*\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return {worker: float(value) for worker, value in found}


def shipyard(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "shipyard", "--home", str(home), "stream", *args]


def test_one_worker_scores_and_serves_its_metrics(
    model_home: Path, names: tuple[str, str], tmp_path: Path
) -> None:
    queue, results = names
    port = free_port()
    log = tmp_path / "stream.log"
    process = start(
        shipyard(model_home, "--model", "fraud", "--broker", REDIS, "--queue", queue,
                 "--results", results, "--metrics-port", str(port)),
        log,
    )  # fmt: skip
    try:
        wait_for(process, READY_LINE)
        collected = publish_and_collect(queue, results, MESSAGES)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        code = stop(process)
    assert code == 0, log.read_text()[-2000:]
    assert collected.distinct == MESSAGES
    assert scored_by_worker(metrics) == {"0": MESSAGES}
    assert f'shipyard_stream_messages_consumed_total{{queue="{queue}",worker="0"}}' in metrics
    assert "shipyard_stream_latency_seconds_bucket" in metrics
    assert "shipyard_stream_batch_size_messages_bucket" in metrics
    assert "shipyard_stream_backlog_messages" in metrics
    assert f"stopped: consumed {MESSAGES}, scored {MESSAGES}" in log.read_text()


def mpiexec() -> str:
    found = Path(sysconfig.get_path("scripts")) / "mpiexec"
    path = str(found) if found.exists() else shutil.which("mpiexec")
    if path is None:
        message = "mpiexec is missing; pip install mpich (a dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_under_mpiexec_each_rank_is_a_worker_named_by_its_rank(
    model_home: Path, names: tuple[str, str], tmp_path: Path
) -> None:
    queue, results = names
    port = next(port for port in free_ports(20) if port_free(port + 1))  # and port + 1
    log = tmp_path / "mpi.log"
    process = start(
        [mpiexec(), "-n", "2",
         *shipyard(model_home, "--model", "fraud", "--broker", REDIS, "--queue", queue,
                   "--results", results, "--metrics-port", str(port), "--batch-size", "64")],
        log,
    )  # fmt: skip
    try:
        wait_for(process, READY_LINE, count=2)
        collected = publish_and_collect(queue, results, SHARED_MESSAGES)
        by_rank = {}
        for rank in (0, 1):
            text = httpx.get(f"http://127.0.0.1:{port + rank}/metrics", timeout=5).text
            by_rank.update(scored_by_worker(text))
    finally:
        stop(process, signal.SIGINT)
    output = log.read_text()
    assert collected.distinct == SHARED_MESSAGES
    assert "worker=0 " in output
    assert "worker=1 " in output
    assert set(by_rank) == {"0", "1"}
    assert sum(by_rank.values()) >= SHARED_MESSAGES
    assert {r["worker"] for r in collected.records} == {"0", "1"}


def test_the_pool_restarts_a_killed_worker_and_stops_cleanly(
    model_home: Path, names: tuple[str, str], tmp_path: Path
) -> None:
    queue, results = names
    log = tmp_path / "pool.log"
    process = start(
        shipyard(model_home, "--model", "fraud", "--broker", REDIS, "--queue", queue,
                 "--results", results, "--workers", "2", "--redelivery-ms", "1000"),
        log,
    )  # fmt: skip
    try:
        wait_for(process, READY_LINE, count=2)
        workers = process.children(recursive=False)
        assert len(workers) == 2
        workers[0].kill()
        wait_for(process, "exited with -9; starting it again")
        wait_for(process, READY_LINE, count=3)  # the new worker is up
        collected = publish_and_collect(queue, results, MESSAGES)
    finally:
        code = stop(process)
    assert code == 0
    assert collected.distinct == MESSAGES
    assert log.read_text().count("stopped: consumed") == 2  # both live workers finished


@pytest.fixture(params=sorted(SHARED))
def any_broker(
    request: pytest.FixtureRequest, service: Callable[[str, int], None]
) -> Iterator[tuple[str, str, str]]:
    """A shared broker of the machine and queue names of the test's own (deleted after)."""
    name, port, url = SHARED[request.param]
    service(name, port)
    suffix = uuid.uuid4().hex[:10]
    queue, results = f"tx-{suffix}", f"results-{suffix}"
    yield url, queue, results
    asyncio.run(delete_queues(url, [queue, results]))


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE))


def test_a_full_results_queue_pauses_the_worker_until_there_is_room(
    model_home: Path, any_broker: tuple[str, str, str], tmp_path: Path
) -> None:
    url, queue, results = any_broker
    bound, batch, count = 200, 50, 1_000
    port = free_port()
    log = tmp_path / "stream.log"
    process = start(
        shipyard(model_home, "--model", "fraud", "--broker", url, "--queue", queue,
                 "--results", results, "--results-max-length", str(bound),
                 "--batch-size", str(batch), "--metrics-port", str(port)),
        log,
    )  # fmt: skip

    async def fill_then_drain() -> tuple[list[int], str, Collected]:
        frame = generate_fraud(count, seed=6).drop(columns=["Class"])
        client = open_broker(url)
        try:
            await publish_all(client, queue, encode_rows(frame)[1])
            backlogs: list[int] = []
            for _ in range(60):  # until the results queue stays full (bounded: ~30 s)
                await asyncio.sleep(0.5)
                backlogs.append(await client.backlog(results) or 0)
                if len(backlogs) >= 4 and len(set(backlogs[-4:])) == 1 and backlogs[-1]:
                    break
            paused = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return backlogs, paused, await collect(client, results, count, timeout_s=60)
        finally:
            await client.close()

    try:
        wait_for(process, READY_LINE)
        backlogs, paused, collected = asyncio.run(fill_then_drain())
    finally:
        stop(process)
    # RabbitMQ's quorum queues check the bound late: a batch in flight may all get in.
    assert bound - batch <= backlogs[-1] <= bound + batch
    consumed = metric(paused, "shipyard_stream_messages_consumed_total")
    assert consumed <= bound + 3 * batch, "it kept taking input with nowhere to put results"
    waits = metric(paused, "shipyard_stream_backpressure_waits_total")
    assert 0 < waits < 60, f"{waits} publish attempts while paused for ~2 s: it spins"
    assert collected.distinct == count  # nothing dropped

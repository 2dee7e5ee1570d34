"""Nothing is lost, on every real backend: a worker killed with SIGKILL in the middle of a
run of 20,000 messages, 1 % of them malformed; a broker restarted in the middle of a run.
Results are counted by distinct id (a redelivered input may be scored twice)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from brokers import (
    SHARED,
    NatsProcess,
    RabbitMQProcess,
    RedisProcess,
    create_server,
    delete_queues,
)
from shipyard.data import generate_fraud
from shipyard.messaging import Broker, open_broker
from shipyard.settings import Settings
from shipyard.stream.client import collect, dead_letter_key, publish_all
from shipyard.stream.messages import encode_rows
from shipyard.stream.process import StreamProcess
from shipyard.stream.scorer import ScorerConfig

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RUN = 20_000
CUT = 4_000  # results seen before the worker is killed or the broker restarted
# The workers' and the test's reading client's: results whose ack a restart refused come
# back to the reader after this, not after the 30 s default.
REDELIVERY_MS = 2_000
QUIET_S = 90  # a run that stops producing results for this long has lost something


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def transactions(count: int, *, malformed_every: int | None = None) -> tuple[set[str], list[bytes]]:
    """Fraud transactions with unique ids; every ``malformed_every``-th body is broken in
    one of several ways. The ids of the valid ones, and all bodies."""
    frame = generate_fraud(count, seed=11).drop(columns=["Class"])
    frame.insert(0, "id", [f"tx-{i}" for i in range(count)])
    ids, bodies = encode_rows(frame)
    valid = set(ids)
    if malformed_every:
        breakers: list[Callable[[dict[str, object]], bytes]] = [
            lambda r: b"{not json " + str(r["id"]).encode(),
            lambda r: orjson.dumps({k: v for k, v in r.items() if k != "id"} | {"n": r["id"]}),
            lambda r: orjson.dumps(r | {"V3": "high"}),
            lambda r: orjson.dumps({k: v for k, v in r.items() if k != "Amount"}),
            lambda r: orjson.dumps(r | {"Time": None}),
        ]
        for n, i in enumerate(range(0, count, malformed_every)):
            bodies[i] = breakers[n % len(breakers)](orjson.loads(bodies[i]))
            valid.discard(ids[i])
    return valid, bodies


@pytest.fixture
def names() -> tuple[str, str]:
    """Input and results queue names of their own."""
    suffix = uuid.uuid4().hex[:10]
    return f"tx-{suffix}", f"results-{suffix}"


@pytest.fixture(params=sorted(SHARED))
async def shared_url(
    request: pytest.FixtureRequest, service: Callable[[str, int], None], names: tuple[str, str]
) -> object:
    """A shared broker of the machine; the test's queues are deleted afterwards."""
    name, port, url = SHARED[request.param]
    service(name, port)
    yield url
    queue, results = names
    await delete_queues(url, [queue, f"{queue}.dead", results, f"{results}.dead"])


async def test_a_worker_killed_mid_run_and_malformed_messages_lose_nothing(
    shared_url: str, names: tuple[str, str], model_home: Path, tmp_path: Path
) -> None:
    queue, results = names
    valid, bodies = transactions(RUN, malformed_every=100)
    malformed = RUN - len(valid)
    assert malformed == RUN // 100
    client = open_broker(shared_url, redelivery_ms=REDELIVERY_MS)
    await publish_all(client, queue, bodies)
    config = ScorerConfig(model="fraud", queue=queue, results=results)
    killed: list[int] = []
    log = tmp_path / "stream.log"
    settings = Settings(home=model_home, broker_url=shared_url)
    with StreamProcess(settings, config, workers=2, redelivery_ms=REDELIVERY_MS, log=log) as stream:
        seen = 0

        def kill_once(new: int) -> None:
            nonlocal seen
            seen += new
            if seen >= CUT and not killed:
                killed.append(stream.kill_worker())

        scored = await collect(client, results, len(valid), timeout_s=QUIET_S, progress=kill_once)
        dead = await collect(client, f"{queue}.dead", malformed, timeout_s=30, key=dead_letter_key)
        code = stream.stop()
    await client.close()
    output = log.read_text()
    assert killed, "the run ended before a worker could be killed"
    assert "exited with -9; starting it again" in output
    assert code == 0, output[-2000:]
    missing = valid - set(scored.ids)
    assert not missing, f"{len(missing)} inputs have no result, e.g. {sorted(missing)[:5]}"
    assert set(scored.ids) == valid  # no result for a malformed input
    # Dead letters: every malformed body, each with a reason (twice at worst, never lost).
    by_body = {str(r["body"]): str(r["reason"]) for r in dead.records}
    assert len(by_body) == malformed
    assert all(reason for reason in by_body.values())
    reasons = " ".join(by_body.values())
    for expected in ("not JSON", "no `id`", "'V3' must be a number", "missing feature", "null"):
        assert expected in reasons


PRIVATE = {"rabbitmq": RabbitMQProcess, "nats": NatsProcess, "redis": RedisProcess}


@pytest.fixture(params=sorted(PRIVATE))
def private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A broker server of the test's own on free ports, which the test may restart."""
    with create_server(PRIVATE[request.param], tmp_path / request.param) as server:
        yield server


async def test_a_broker_restarted_mid_run_loses_nothing(
    private_broker: RabbitMQProcess | NatsProcess | RedisProcess,
    names: tuple[str, str],
    model_home: Path,
    tmp_path: Path,
) -> None:
    queue, results = names
    valid, bodies = transactions(RUN)
    client: Broker = open_broker(private_broker.url, redelivery_ms=REDELIVERY_MS)
    await publish_all(client, queue, bodies)
    config = ScorerConfig(model="fraud", queue=queue, results=results)
    restarts: list[threading.Thread] = []
    log = tmp_path / "stream.log"
    settings = Settings(home=model_home, broker_url=private_broker.url)
    with StreamProcess(settings, config, workers=2, redelivery_ms=REDELIVERY_MS, log=log) as stream:
        seen = 0

        def restart_once(new: int) -> None:
            nonlocal seen
            seen += new
            if seen >= CUT and not restarts:
                # In a thread: RabbitMQ takes seconds to come back, and reading goes on.
                restarts.append(threading.Thread(target=private_broker.restart))
                restarts[0].start()

        scored = await collect(
            client, results, len(valid), timeout_s=QUIET_S, progress=restart_once
        )
        for thread in restarts:
            thread.join(120)
        code = stream.stop()
    await client.close()
    output = log.read_text()
    assert restarts, "the run ended before the broker could be restarted"
    assert code == 0, output[-2000:]
    missing = valid - set(scored.ids)
    assert not missing, f"{len(missing)} inputs have no result, e.g. {sorted(missing)[:5]}"

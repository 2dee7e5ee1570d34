"""A run over a broker queue: the users publish inputs, an in-process scorer (memory broker)
or a real ``shipyard stream`` child (a private Redis server) answers, and every label
arrives on ``<model>.feedback`` under an id a result carried."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest

from brokers import RedisProcess, create_server
from shipyard.errors import UnavailableError
from shipyard.inference.service import InferenceService
from shipyard.messaging import Broker, QueueSpec, open_broker
from shipyard.monitoring.monitor import feedback_queue
from shipyard.registry import Registry
from shipyard.settings import Settings
from shipyard.stream.process import StreamProcess
from shipyard.stream.scorer import Scorer, ScorerConfig
from shipyard.traffic.config import Protocol, TrafficConfig
from shipyard.traffic.rows import load_pool
from shipyard.traffic.runner import Destination, prepared


async def take_all(broker: Broker, queue: str, rounds: int = 50) -> list[dict[str, object]]:
    """Every label on ``queue`` (messages are lists of {id, label}), bounded in rounds."""
    await broker.declare(QueueSpec(queue))
    labels: list[dict[str, object]] = []
    for _ in range(rounds):
        deliveries = await broker.consume(queue, 1000, 100)
        if not deliveries:
            break
        for delivery in deliveries:
            labels += orjson.loads(delivery.body)
        await broker.ack(queue, deliveries)
    return labels


def config(**options: object) -> TrafficConfig:
    values: dict[str, object] = {
        "protocol": Protocol.STREAM, "users": 8, "requests": 600, "label_probability": 0.5,
        "label_delay_max_s": 0.2, "timeout_s": 20.0,
    }  # fmt: skip
    values.update(options)
    return TrafficConfig(**values)  # type: ignore[arg-type]


def test_a_run_over_the_memory_broker_labels_what_the_scorer_answered(
    model_home: Path,
) -> None:
    url = f"memory://traffic-{uuid.uuid4().hex}"
    pool = load_pool(data=None, rows=2000, seed=4)
    answered: list[str] = []

    async def main() -> tuple[dict[str, object], list[dict[str, object]]]:
        with Registry.open(Settings(home=model_home)) as registry:
            service = InferenceService(registry, max_batch_size=256, max_batch_delay_ms=0)
            await service.start()
            scorer_broker = open_broker(url)
            scorer = Scorer(scorer_broker, service, ScorerConfig(model="fraud", max_wait_ms=5))
            await scorer.start()
            scoring = asyncio.create_task(scorer.run())
            try:
                destination = Destination(broker_url=url)
                trace = lambda slot, visit, answer: answered.append(answer.id)  # noqa: E731
                async with prepared(config(), pool, destination, trace=trace) as run:
                    await run.users.run()
                    document = run.summary(0.0)
                reader = open_broker(url)
                labels = await take_all(reader, feedback_queue("fraud"))
                await reader.close()
            finally:
                scorer.stop()
                await asyncio.wait_for(scoring, 30)
                await service.close()
                await scorer_broker.close()
        return document, labels

    document, labels = asyncio.run(main())
    assert document["requests"] == document["succeeded"] == 600
    assert document["versions"] == {"1": 600}
    assert document["errors"] == 0
    assert len(labels) == document["labels_sent"] == document["labels_chosen"]
    assert abs(len(labels) / 600 - 0.5) < 0.1
    assert {label["id"] for label in labels} <= set(answered)
    assert {label["label"] for label in labels} <= {0, 1}


def test_no_scorer_on_the_queues_is_an_unavailable_error() -> None:
    url = f"memory://traffic-{uuid.uuid4().hex}"
    pool = load_pool(data=None, rows=100)

    async def main() -> None:
        async with prepared(config(timeout_s=0.5), pool, Destination(broker_url=url)):
            pass

    with pytest.raises(UnavailableError, match="start a scorer on this broker"):
        asyncio.run(main())


@pytest.mark.integration
def test_a_run_over_a_real_redis_reaches_a_real_scorer_and_the_feedback_queue(
    model_home: Path, tmp_path: Path
) -> None:
    with create_server(RedisProcess, tmp_path / "redis") as redis:
        settings = Settings(home=model_home, broker_url=redis.url)
        scorer = ScorerConfig(model="fraud", queue="traffic-in", results="traffic-out")
        with StreamProcess(settings, scorer, workers=1, log=tmp_path / "stream.log"):
            pool = load_pool(data=None, rows=2000, seed=9, drift="few")
            destination = Destination(
                broker_url=redis.url, queue="traffic-in", results="traffic-out"
            )

            async def main() -> tuple[dict[str, object], list[dict[str, object]]]:
                run_config = config(drift_at_s=0.0, requests=400)
                async with prepared(run_config, pool, destination) as run:
                    await run.users.run()
                    document = run.summary(0.0)
                reader = open_broker(redis.url)
                try:
                    return document, await take_all(reader, feedback_queue("fraud"))
                finally:
                    await reader.close()

            document, labels = asyncio.run(main())
    assert document["requests"] == document["succeeded"] == 400
    assert document["errors"] == 0
    assert document["drift"]["requests_after"] == 400  # drifted from the start
    assert len(labels) == document["labels_sent"] > 100

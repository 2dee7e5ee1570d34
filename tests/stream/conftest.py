"""Fixtures of the stream tests: a registry holding two versions of a small model, a
scorer over an in-process broker, and helpers that publish inputs and collect results."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import orjson
import pytest

from brokers import delete_queues
from shipyard.inference import ExportedModel
from shipyard.inference.service import InferenceService
from shipyard.messaging import Broker, QueueSpec, open_broker
from shipyard.registry import Registry
from shipyard.settings import Settings
from shipyard.stream.scorer import Scorer, ScorerConfig

FEATURES = ["a", "b", "c", "d"]
MODEL = "scorer-test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stream_registry(
    sqlite_settings: Settings, exported_models: list[ExportedModel]
) -> Iterator[Registry]:
    """A registry with MODEL:1 in production and MODEL:2 registered, not promoted."""
    with Registry.open(sqlite_settings) as registry:
        for model in exported_models:
            registry.register_version(
                MODEL,
                files=model.files,
                format=model.format,
                input_schema=model.input_schema,
                output_schema=model.output_schema,
                metrics={},
            )
        registry.promote(f"{MODEL}:1", "production")
        yield registry


def transaction(message_id: str, value: float = 0.5) -> bytes:
    """A valid input message for MODEL."""
    return orjson.dumps({"id": message_id, **{name: value for name in FEATURES}})


@dataclass
class Rig:
    """A scorer running over a memory broker, and a second connection to that broker."""

    url: str
    broker: Broker
    client: Broker
    scorer: Scorer
    config: ScorerConfig
    task: asyncio.Task[object] | None = None

    def connect(self) -> Broker:
        """Another connection to the rig's broker (close it yourself)."""
        return open_broker(self.url, redelivery_ms=200)

    async def publish(self, bodies: list[bytes]) -> None:
        await self.client.publish(self.config.queue, bodies)

    async def start(self) -> None:
        await self.scorer.start()
        self.run()

    def run(self) -> None:
        """Run the (started) scorer in a task."""
        self.task = asyncio.get_running_loop().create_task(self.scorer.run())

    async def collect(
        self, queue: str, expected: int, rounds: int = 100
    ) -> list[dict[str, object]]:
        """Consume and ack until ``expected`` messages came, or the bounded rounds ran out."""
        records: list[dict[str, object]] = []
        for _ in range(rounds):
            if len(records) >= expected:
                break
            deliveries = await self.client.consume(queue, 500, 100)
            records += [orjson.loads(d.body) for d in deliveries]
            await self.client.ack(queue, deliveries)
        return records

    async def stop(self) -> None:
        self.scorer.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def rigs(stream_registry: Registry) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """``await rigs(**config)``: a started scorer over a fresh memory namespace."""
    made: list[tuple[Rig, InferenceService]] = []

    async def make(broker: Broker | None = None, url: str | None = None, **options: object) -> Rig:
        """A rig on a fresh memory namespace, or on ``url`` (a real broker: give it queues
        of its own, which are deleted after the test)."""
        redelivery_ms = 200 if url is None else 30_000
        url = url or f"memory://stream-{uuid.uuid4().hex}"
        broker = broker or open_broker(url, redelivery_ms=redelivery_ms)
        client = open_broker(url, redelivery_ms=redelivery_ms)
        config = ScorerConfig(model=MODEL, **options)  # type: ignore[arg-type]
        service = InferenceService(
            stream_registry, max_batch_size=config.batch_size, max_batch_delay_ms=0,
            poll_seconds=0.1,
        )  # fmt: skip
        await service.start()
        rig = Rig(url, broker, client, Scorer(broker, service, config), config)
        await client.declare(QueueSpec(config.queue))
        made.append((rig, service))
        return rig

    yield make
    for rig, service in made:
        if rig.task is not None and not rig.task.done():
            await rig.stop()
        await service.close()
        await rig.broker.close()
        await rig.client.close()
        if not rig.url.startswith("memory://"):
            await delete_queues(rig.url, [rig.config.queue, rig.config.results])

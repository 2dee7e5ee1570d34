"""Publishing transactions over HTTP: POST /v1/queues/{queue}/messages (operator role)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from brokers import SHARED, delete_queues
from shipyard.messaging import QueueSpec, open_broker
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.registry import Registry, Users
from shipyard.server.app import create_app
from shipyard.settings import Settings

REDIS = SHARED["redis"][2]


@pytest.fixture
def keys(model_home: Path) -> dict[str, str]:
    """An API key per role."""
    with Registry.open(Settings(home=model_home)) as registry:
        users = Users(registry)
        return {
            role: users.create_api_key(f"{role}-service", role)[1]
            for role in ("viewer", "operator", "admin")
        }


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"tx-{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(delete_queues(REDIS, [name, f"{name}.dead"]))


@pytest.fixture
def redis_client(
    model_home: Path, queue: str, service: Callable[[str, int], None]
) -> Iterator[TestClient]:
    """A server publishing to the shared Redis, open for ``queue``."""
    service("Redis", 6379)
    settings = Settings(home=model_home, broker_url=REDIS, publish_queues=[queue, "other"])
    with TestClient(create_app(settings)) as client:
        yield client


def take(url: str, queue: str, count: int) -> list[dict[str, object]]:
    async def consume() -> list[dict[str, object]]:
        broker = open_broker(url)
        try:
            await broker.declare(QueueSpec(queue))
            deliveries = await broker.consume(queue, count + 10, 1000)
            await broker.ack(queue, deliveries)
            return [orjson.loads(d.body) for d in deliveries]
        finally:
            await broker.close()

    return asyncio.run(consume())


@pytest.mark.integration
def test_an_operator_publishes_a_batch_that_a_consumer_receives(
    redis_client: TestClient, keys: dict[str, str], queue: str
) -> None:
    batch = [{"id": "tx-1", "V1": 0.5}, {"V1": 1.5, "Amount": 3}]
    answer = redis_client.post(
        f"/v1/queues/{queue}/messages", json=batch, headers={"X-API-Key": keys["operator"]}
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["queue"] == queue
    assert body["published"] == 2
    assert body["ids"][0] == "tx-1"
    made_up = body["ids"][1]
    assert len(made_up) == 32
    assert take(REDIS, queue, 2) == [
        {"id": "tx-1", "V1": 0.5},
        {"id": made_up, "V1": 1.5, "Amount": 3},
    ]


@pytest.mark.integration
def test_publishing_needs_the_operator_role(
    redis_client: TestClient, keys: dict[str, str], queue: str
) -> None:
    url = f"/v1/queues/{queue}/messages"
    anonymous = redis_client.post(url, json=[{"id": "a"}])
    assert anonymous.status_code == 401
    viewer = redis_client.post(url, json=[{"id": "a"}], headers={"X-API-Key": keys["viewer"]})
    assert viewer.status_code == 403
    assert "operator" in viewer.json()["error"]
    admin = redis_client.post(url, json=[{"id": "a"}], headers={"X-API-Key": keys["admin"]})
    assert admin.status_code == 202
    assert [m["id"] for m in take(REDIS, queue, 1)] == ["a"]  # only the allowed one


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([], 400, "no messages"),
        ({"id": "x"}, 422, "body"),
        ([1, 2], 422, "body"),
        ([{"id": 5}], 422, "message 0: `id` must be a non-empty string, got 5"),
        ([{"id": "ok"}, {"id": ""}], 422, "message 1: `id`"),
        ([{"id": str(i)} for i in range(10_001)], 400, "at most 10,000"),
    ],
)
def test_bad_batches_are_refused_and_publish_nothing(
    redis_client: TestClient,
    keys: dict[str, str],
    queue: str,
    body: object,
    status: int,
    message: str,
) -> None:
    answer = redis_client.post(
        f"/v1/queues/{queue}/messages", json=body, headers={"X-API-Key": keys["operator"]}
    )
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert take(REDIS, queue, 0) == []


@pytest.mark.integration
def test_malformed_json_is_a_client_error(
    redis_client: TestClient, keys: dict[str, str], queue: str
) -> None:
    answer = redis_client.post(
        f"/v1/queues/{queue}/messages",
        content=b"[{not json",
        headers={"X-API-Key": keys["operator"], "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert "error" in answer.json()


@pytest.mark.integration
def test_only_the_configured_queues_are_open(
    redis_client: TestClient, keys: dict[str, str]
) -> None:
    answer = redis_client.post(
        "/v1/queues/results/messages", json=[{"id": "x"}], headers={"X-API-Key": keys["operator"]}
    )
    assert answer.status_code == 404
    assert "not open for publishing" in answer.json()["error"]
    assert "SHIPYARD_PUBLISH_QUEUES" in answer.json()["error"]


@pytest.mark.integration
def test_a_full_queue_answers_503_naming_what_was_not_stored(
    redis_client: TestClient, keys: dict[str, str], queue: str
) -> None:
    async def bound() -> None:  # the first declaration wins: a bound of 2
        broker = open_broker(REDIS)
        await broker.declare(QueueSpec(queue, max_length=2))
        await broker.close()

    asyncio.run(bound())
    headers = {"X-API-Key": keys["operator"]}
    url = f"/v1/queues/{queue}/messages"
    assert redis_client.post(url, json=[{"id": "1"}], headers=headers).status_code == 202
    full = redis_client.post(url, json=[{"id": "2"}, {"id": "3"}], headers=headers)
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "1"
    assert full.json()["refused_ids"] == ["2", "3"]
    assert full.json()["published"] == 0
    assert [m["id"] for m in take(REDIS, queue, 3)] == ["1"]  # nothing lost, nothing doubled


def test_without_a_broker_url_the_embedded_server_is_used_and_stopped(
    model_home: Path, keys: dict[str, str]
) -> None:
    settings = Settings(home=model_home)
    embedded = EmbeddedNats(model_home)
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/v1/queues/transactions/messages",
            json=[{"id": "e1", "V1": 1.0}],
            headers={"X-API-Key": keys["operator"]},
        )
        assert answer.status_code == 202, answer.text
        url = embedded.start()  # the server's, reused
        assert [m["id"] for m in take(url, "transactions", 1)] == ["e1"]
        embedded.stop()  # not ours: leaves it running
    assert not (model_home / "nats" / "server.json").exists()  # the server process stopped it

"""``publish_all`` and ``collect`` over the in-process broker: what the demo, the tests and
``shipyard consume`` count results and dead letters with."""

from __future__ import annotations

import orjson
import pytest

from shipyard.messaging import Delivery, QueueSpec, dead_letter_body, open_broker
from shipyard.stream.client import collect, dead_letter_key, publish_all

pytestmark = pytest.mark.anyio


async def test_publish_all_sends_every_body_in_chunks_with_progress() -> None:
    broker = open_broker("memory://client-publish")
    steps: list[int] = []
    bodies = [orjson.dumps({"id": f"t{i}"}) for i in range(25)]
    await publish_all(broker, "in", bodies, chunk=10, progress=steps.append)
    assert steps == [10, 10, 5]
    assert await broker.backlog("in") == 25
    await broker.close()


async def test_collect_counts_a_redelivered_result_once_by_id() -> None:
    broker = open_broker("memory://client-ids")
    await broker.declare(QueueSpec("results"))
    results = [orjson.dumps({"id": f"t{i}"}) for i in (1, 2, 2, 3)]
    await broker.publish("results", results)
    collected = await collect(broker, "results", 3, timeout_s=1)
    assert collected.distinct == 3
    assert collected.duplicates == 1
    assert len(collected.records) == 4
    await broker.close()


async def test_collect_keys_dead_letters_by_original_body_so_a_duplicate_is_not_a_second_one() -> (
    None
):
    """A dead letter written twice (a worker killed after dead-lettering, before the ack)
    must not stand in for another malformed input that is still on its way."""
    broker = open_broker("memory://client-dead")
    await broker.declare(QueueSpec("in.dead"))

    def dead(body: bytes) -> bytes:
        return dead_letter_body("in", Delivery(body=body, attempts=1, handle=None), "not JSON")

    await broker.publish("in.dead", [dead(b"{broken"), dead(b"{broken"), dead(b"\xff\xfe")])
    collected = await collect(broker, "in.dead", 3, timeout_s=0.5, key=dead_letter_key)
    assert collected.distinct == 2  # the third distinct one never came: a quiet queue ends it
    assert collected.duplicates == 1
    await broker.close()


async def test_collect_acks_and_leaves_out_records_of_another_run() -> None:
    broker = open_broker("memory://client-belongs")
    await broker.declare(QueueSpec("results"))
    await broker.publish("results", [b'{"id": "old-1"}', b'{"id": "new-1"}', b"[1, 2]"])
    collected = await collect(
        broker, "results", 1, timeout_s=1, belongs=lambda r: r["id"].startswith("new-")
    )
    assert [r["id"] for r in collected.records] == ["new-1"]
    assert await broker.backlog("results") == 0
    await broker.close()

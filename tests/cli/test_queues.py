"""shipyard publish and consume: rows onto a queue and messages off it, and what goes wrong."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pandas as pd
import pytest

from brokers import SHARED, delete_queues
from shipyard.messaging import QueueSpec, open_broker
from shipyard.messaging.embedded import EmbeddedNats

from .conftest import Cli

REDIS = SHARED["redis"][2]


@pytest.fixture
def redis_queue(service: Callable[[str, int], None]) -> Iterator[str]:
    service("Redis", 6379)
    name = f"pub-{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(delete_queues(REDIS, [name, f"{name}.dead"]))


def drain(url: str, queue: str) -> list[dict[str, object]]:
    async def take() -> list[dict[str, object]]:
        broker = open_broker(url)
        try:
            await broker.declare(QueueSpec(queue))
            records: list[dict[str, object]] = []
            for _ in range(50):
                deliveries = await broker.consume(queue, 1000, 200)
                if not deliveries:
                    break
                records += [orjson.loads(d.body) for d in deliveries]
                await broker.ack(queue, deliveries)
            return records
        finally:
            await broker.close()

    return asyncio.run(take())


@pytest.mark.integration
def test_rows_become_messages_with_their_ids(cli: Cli, tmp_path: Path, redis_queue: str) -> None:
    table = tmp_path / "rows.csv"
    pd.DataFrame({"id": ["a", "007", "c"], "x": [1.0, 2.0, None]}).to_csv(table, index=False)
    result = cli("publish", str(table), "--broker", REDIS, "--queue", redis_queue)
    assert result.code == 0, result.err
    assert f"published 3 messages to '{redis_queue}'" in result.out
    assert drain(REDIS, redis_queue) == [
        {"id": "a", "x": 1.0},
        {"id": "007", "x": 2.0},  # an id that looks like a number stays the text it was
        {"id": "c", "x": None},
    ]


@pytest.mark.integration
def test_json_lines_without_ids_get_made_up_ones(
    cli: Cli, tmp_path: Path, redis_queue: str
) -> None:
    table = tmp_path / "rows.jsonl"
    table.write_text('{"x": 1}\n{"x": 2}\n')
    result = cli("publish", str(table), "--broker", REDIS, "--queue", redis_queue, "--chunk", "1")
    assert result.code == 0, result.err
    records = drain(REDIS, redis_queue)
    assert [r["x"] for r in records] == [1, 2]
    assert len({r["id"] for r in records}) == 2


@pytest.mark.integration
def test_a_full_queue_is_an_error_saying_how_much_was_sent(
    cli: Cli, tmp_path: Path, redis_queue: str
) -> None:
    async def bound() -> None:
        broker = open_broker(REDIS)
        await broker.declare(QueueSpec(redis_queue, max_length=5))
        await broker.close()

    asyncio.run(bound())
    table = tmp_path / "rows.csv"
    pd.DataFrame({"x": range(10)}).to_csv(table, index=False)
    result = cli(
        "publish", str(table), "--broker", REDIS, "--queue", redis_queue,
        "--chunk", "5", "--patience", "0.2",
    )  # fmt: skip
    assert result.code == 6
    assert "published 5 of 10 messages" in result.err
    assert "is a scorer consuming it?" in result.err
    assert len(drain(REDIS, redis_queue)) == 5  # what was published stays


def test_without_a_broker_the_embedded_one_keeps_the_messages(
    cli: Cli, home: Path, tmp_path: Path
) -> None:
    table = tmp_path / "rows.csv"
    pd.DataFrame({"id": ["e1"], "x": [1.0]}).to_csv(table, index=False)
    result = cli("publish", str(table))
    assert result.code == 0, result.err
    assert "nats://127.0.0.1:" in result.out
    with EmbeddedNats(home) as url:  # started again: the messages are on disk
        assert drain(url, "transactions") == [{"id": "e1", "x": 1.0}]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.csv"], 2, "no such file"),
        (["empty.csv"], 2, "has no rows"),
        (["rows.txt"], 2, "unsupported file type '.txt'"),
        (["rows.csv", "--broker", "kafka://127.0.0.1:9092"], 2, "unsupported broker URL"),
        (["rows.csv", "--broker", "redis://:s3cret@127.0.0.1:1/0"], 6, "cannot reach Redis"),
    ],
)
def test_bad_input_is_one_line_with_an_exit_code(
    cli: Cli, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "empty.csv").write_text("x\n")
    (tmp_path / "rows.txt").write_text("x\n1\n")
    args = [str(tmp_path / args[0]), *args[1:]]
    result = cli("publish", *args)
    assert result.code == code, result.err
    assert message in result.err
    assert "s3cret" not in result.err
    assert "Traceback" not in result.err


@pytest.mark.integration
def test_consume_takes_messages_off_the_queue(cli: Cli, tmp_path: Path, redis_queue: str) -> None:
    async def put() -> None:
        broker = open_broker(REDIS)
        await broker.declare(QueueSpec(redis_queue))
        await broker.publish(redis_queue, [b'{"id": "1"}', b"not json", b'{"id": "3"}'])
        await broker.close()

    asyncio.run(put())
    first = cli("consume", redis_queue, "--broker", REDIS, "--count", "2", "--wait", "1")
    assert first.code == 0, first.err
    assert first.out.splitlines() == ['{"id": "1"}', "not json"]
    out = tmp_path / "rest.jsonl"
    rest = cli("consume", redis_queue, "--broker", REDIS, "--wait", "0.5", "-o", str(out))
    assert rest.code == 0, rest.err
    assert f"wrote 1 messages from '{redis_queue}'" in rest.out
    assert out.read_text() == '{"id": "3"}\n'
    empty = cli("consume", redis_queue, "--broker", REDIS, "--wait", "0.3")
    assert empty.code == 0
    assert empty.out == ""  # stdout stays the data
    assert empty.err.strip() == f"0 messages from '{redis_queue}' within 0.3 s"


def test_consume_on_an_empty_queue_says_so_on_stderr(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "none.jsonl"
    result = cli(
        "consume", "nothing", "--broker", "memory://empty", "--wait", "0.2", "-o", str(out)
    )
    assert result.code == 0, result.err
    assert result.err.strip() == "0 messages from 'nothing' within 0.2 s"
    assert out.read_text() == ""

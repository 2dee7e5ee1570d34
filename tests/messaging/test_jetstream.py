"""JetStream's wire protocol as the NATS backend reads it: ack subjects and publish acks
(the data path against a real server is in test_nats.py and the contract suite)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from nats.aio.msg import Msg

from shipyard.messaging.jetstream import Ack, Pull, delivered, read_ack, status


def _msg(
    *, reply: str = "", data: bytes = b"", headers: dict[str, str] | None = None, subject: str = ""
) -> Msg:
    client: Any = None  # never used: nothing here answers or acks
    return Msg(client, subject=subject, reply=reply, data=data, headers=headers)


def test_the_delivery_count_and_stream_time_come_from_the_ack_subject() -> None:
    msg = _msg(reply="$JS.ACK.orders_3f2a.shipyard.3.1042.977.1700000000123456789.12")
    assert delivered(msg) == (3, 1700000000.123456789)


def test_the_longer_ack_subject_with_domain_and_account_is_read_too() -> None:
    reply = "$JS.ACK.hub.ACCOUNTHASH.orders_3f2a.shipyard.2.1042.977.1700000000000000000.12.x"
    attempts, published_at = delivered(_msg(reply=reply))
    assert attempts == 2
    assert published_at == pytest.approx(1_700_000_000.0)


def test_control_messages_carry_a_status_and_data_messages_none() -> None:
    assert status(_msg(headers={"Status": "408", "Description": "Request Timeout"})) == "408"
    assert status(_msg(data=b"x")) is None


@pytest.mark.parametrize(
    ("reply", "answer", "description"),
    [
        (None, Ack.MISSING, "no ack in time"),
        (_msg(headers={"Status": "503"}), Ack.NO_STREAM, "no stream answered"),
        (_msg(data=b'{"stream":"orders_3f2a","seq":7}'), Ack.STORED, ""),
        (_msg(data=b'{"stream":"orders_3f2a","seq":7,"duplicate":true}'), Ack.STORED, ""),
        (
            _msg(data=orjson.dumps({"error": {"code": 503, "err_code": 10077}})),
            Ack.FULL,
            "the stream is full",
        ),
        (
            _msg(data=orjson.dumps({"error": {"err_code": 10078, "description": "bytes"}})),
            Ack.FULL,
            "the stream is full",
        ),
        (
            _msg(data=orjson.dumps({"error": {"err_code": 10039, "description": "no space"}})),
            Ack.REFUSED,
            "no space",
        ),
    ],
    ids=["none", "no-stream", "stored", "duplicate", "max-msgs", "max-bytes", "other"],
)
def test_publish_acks_are_read_as_jetstream_sends_them(
    reply: Msg | None, answer: Ack, description: str
) -> None:
    assert read_ack(reply) == (answer, description)


def test_pull_requests_go_to_the_consumers_next_subject() -> None:
    pull = Pull("orders_3f2a", "shipyard", "nats://127.0.0.1:4222", 5.0)
    assert pull.next_subject == "$JS.API.CONSUMER.MSG.NEXT.orders_3f2a.shipyard"

import orjson
import pytest

from shipyard.errors import ConfigurationError
from shipyard.messaging import Delivery, QueueSpec, dead_letter_body, open_broker


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"memory://.*amqp://.*redis://"):
        open_broker("kafka://127.0.0.1:9092")


def test_dead_letter_queue_defaults_to_dot_dead() -> None:
    assert QueueSpec("transactions").dead_letter_name == "transactions.dead"
    assert QueueSpec("transactions", dead_letter="bad").dead_letter_name == "bad"


def test_dead_letter_body_keeps_the_original_and_the_reason() -> None:
    record = orjson.loads(dead_letter_body("q", Delivery(b'{"id": "1"}', 3, None), "not JSON"))
    assert record["body"] == '{"id": "1"}'
    assert record["reason"] == "not JSON"
    assert record["attempts"] == 3
    assert record["queue"] == "q"

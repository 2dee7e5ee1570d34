"""The scheme → backend table: which class serves a URL, how its URL is shown, and that
naming a URL loads no broker client library."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from shipyard.errors import ConfigurationError
from shipyard.messaging import Broker, open_broker, shown_url
from shipyard.messaging.backends import BACKENDS, Backend, backend_for

CLIENT_LIBRARIES = ("aio_pika", "aiormq", "nats", "redis")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.schemes[0])
def test_every_row_names_a_class_with_the_broker_methods(backend: Backend) -> None:
    module, name = backend.implementation.split(":")
    cls = getattr(importlib.import_module(module), name)
    for method in ("declare", "publish", "consume", "ack", "reject", "backlog", "close"):
        assert callable(getattr(cls, method, None)), f"{name} has no {method}()"


def test_no_scheme_is_claimed_twice() -> None:
    schemes = [s for backend in BACKENDS for s in backend.schemes]
    assert len(schemes) == len(set(schemes))


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("memory://x", "MemoryBroker"),
        ("MEMORY://x", "MemoryBroker"),
        ("amqp://guest:guest@127.0.0.1:5672/", "RabbitMQBroker"),
        ("amqps://127.0.0.1:5671/", "RabbitMQBroker"),
        ("nats://127.0.0.1:4222", "NatsBroker"),
        ("tls://127.0.0.1:4222", "NatsBroker"),
        ("redis://127.0.0.1:6379", "RedisBroker"),
        ("rediss://127.0.0.1:6380", "RedisBroker"),
    ],
)
def test_open_broker_picks_the_backend_by_scheme(url: str, cls: str) -> None:
    broker: Broker = open_broker(url)  # no connection until first use
    assert type(broker).__name__ == cls


@pytest.mark.parametrize("url", ["kafka://u:s3cret@127.0.0.1:9092", "127.0.0.1:4222", ""])
def test_an_unknown_scheme_names_every_supported_one_and_no_secret(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        backend_for(url)
    message = str(raised.value)
    for backend in BACKENDS:
        assert backend.usage in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://shipyard:s3cret@mq:5672/vhost", "amqp://shipyard@mq:5672/vhost"),
        ("redis://:s3cret@cache:6379/0", "redis://cache:6379/0"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?db=1"),
        ("memory://local", "memory://local"),
        ("nats://s3cret@bus:4222", "nats://bus:4222"),  # a token where a user goes
        ("nats://user:s3cret@bus:4222,tls://s3cret@[::1]:4223", "nats://bus:4222,tls://[::1]:4223"),
        ("kafka://u:s3cret@k:9092", "kafka://u@k:9092"),
        # Unparsable ports and addresses still lose their credentials.
        ("amqp://u:s3cret@mq:99999/", "amqp://mq:99999"),
        ("nats://s3cret@[::1", "nats://[::1"),
    ],
)
def test_shown_urls_keep_no_secret(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_naming_a_url_loads_no_broker_client() -> None:
    """Start-up time: ``shipyard --help`` and URL messages import no client library."""
    code = (
        "import sys\n"
        "from shipyard.messaging import shown_url\n"
        "from shipyard.messaging.backends import backend_for\n"
        "for url in ('nats://a:4222', 'amqp://u:p@b/', 'redis://c:6379'):\n"
        "    shown_url(url), backend_for(url)\n"
        f"print(sorted(set(sys.modules) & set({CLIENT_LIBRARIES!r})))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"

"""Messaging: one small ``Broker`` protocol, backends chosen by URL scheme."""

from __future__ import annotations

from shipyard.errors import BackpressureError, ConfigurationError
from shipyard.messaging.broker import (
    Broker,
    Delivery,
    QueueSpec,
    dead_letter_body,
    publish_patiently,
    shown_url,
)

__all__ = [
    "BackpressureError",
    "Broker",
    "Delivery",
    "QueueSpec",
    "dead_letter_body",
    "open_broker",
    "publish_patiently",
    "shown_url",
]


def open_broker(url: str, *, redelivery_ms: float = 30_000) -> Broker:
    """The broker for a URL: ``memory://``, ``amqp://``, ``nats://``, ``redis://``."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from shipyard.messaging.memory import MemoryBroker

        return MemoryBroker(url, redelivery_ms=redelivery_ms)
    if scheme in ("redis", "rediss"):
        from shipyard.messaging.redis import RedisBroker

        return RedisBroker(url, redelivery_ms=redelivery_ms)
    if scheme in ("amqp", "amqps"):
        from shipyard.messaging.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(url, redelivery_ms=redelivery_ms)
    if scheme in ("nats", "tls"):
        from shipyard.messaging.nats import NatsBroker

        return NatsBroker(url, redelivery_ms=redelivery_ms)
    raise ConfigurationError(
        f"unsupported broker URL {url!r}; use memory://, amqp://USER:PASSWORD@HOST:PORT/, "
        "nats://HOST:PORT (tls:// for TLS), or redis://HOST:PORT"
    )

"""Messaging: one small ``Broker`` protocol, backends chosen by URL scheme."""

from __future__ import annotations

from shipyard.errors import BackpressureError
from shipyard.messaging.backends import backend_for, shown_url
from shipyard.messaging.broker import (
    Broker,
    Delivery,
    QueueSpec,
    dead_letter_body,
    publish_patiently,
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
    return backend_for(url).open(url, redelivery_ms=redelivery_ms)

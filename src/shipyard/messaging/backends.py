"""Which backend serves a broker URL, and how its URL is shown without secrets.

One row per backend: its URL schemes, the class that implements it (imported on first use,
so that naming a URL — or running ``shipyard --help`` — never loads aio-pika, nats-py or
redis-py), and how its URL is redacted for messages. A new backend is one more row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from yarl import URL

from shipyard.errors import ConfigurationError
from shipyard.messaging.broker import Broker


def without_password(url: str) -> str:
    """The URL without its password, in the authority or in the query."""
    parsed = URL(url)
    if parsed.password is not None:
        parsed = parsed.with_password(None)
    if "password" in parsed.query:
        parsed = parsed.without_query_params("password")
    return str(parsed)


def servers_without_credentials(url: str) -> str:
    """A comma-separated list of server URLs without user, password or token (NATS puts
    a token where a user goes), and without query or fragment."""
    shown = []
    for server in url.split(","):
        parts = urlsplit(server.strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        shown.append(urlunsplit((parts.scheme, host + port, parts.path, "", "")))
    return ",".join(shown)


@dataclass(frozen=True)
class Backend:
    """A broker backend: its schemes, its class (``module:Class``), how a URL is shown."""

    schemes: tuple[str, ...]
    implementation: str
    redact: Callable[[str], str]
    usage: str  # the URL form named when a URL fits no backend

    def open(self, url: str, *, redelivery_ms: float) -> Broker:
        """An instance of the backend's class for ``url`` (its module imported now)."""
        module, name = self.implementation.split(":")
        cls: Callable[..., Broker] = getattr(importlib.import_module(module), name)
        return cls(url, redelivery_ms=redelivery_ms)


BACKENDS = (
    Backend(("memory",), "shipyard.messaging.memory:MemoryBroker", without_password, "memory://"),
    Backend(
        ("amqp", "amqps"),
        "shipyard.messaging.rabbitmq:RabbitMQBroker",
        without_password,
        "amqp://USER:PASSWORD@HOST:PORT/",
    ),
    Backend(
        ("nats", "tls"),
        "shipyard.messaging.nats:NatsBroker",
        servers_without_credentials,
        "nats://HOST:PORT (tls:// for TLS)",
    ),
    Backend(
        ("redis", "rediss"),
        "shipyard.messaging.redis:RedisBroker",
        without_password,
        "redis://HOST:PORT",
    ),
)
_BY_SCHEME = {scheme: backend for backend in BACKENDS for scheme in backend.schemes}

CLIENT_LOGGERS = ("aio_pika", "aiormq", "nats", "redis")
"""The loggers of the backends' client libraries (reconnect attempts and the like)."""


def scheme(url: str) -> str:
    """The URL's scheme, lower case (``""`` when it has none)."""
    head, separator, _ = url.partition("://")
    return head.lower() if separator else ""


def backend_for(url: str) -> Backend:
    """The backend whose scheme the URL has; ``ConfigurationError`` naming the others."""
    backend = _BY_SCHEME.get(scheme(url))
    if backend is None:
        forms = [b.usage for b in BACKENDS]
        raise ConfigurationError(
            f"unsupported broker URL {shown_url(url)!r}; use {', '.join(forms[:-1])}, "
            f"or {forms[-1]}"
        )
    return backend


def shown_url(url: str) -> str:
    """The URL without its secrets, for messages: the password (in the authority or the
    query); for NATS, whose token sits where a user would, the whole user part."""
    backend = _BY_SCHEME.get(scheme(url))
    try:
        return (backend.redact if backend is not None else without_password)(url)
    except ValueError:  # a port or an address no parser takes: show the hosts only
        return _hosts_only(url)


def _hosts_only(url: str) -> str:
    shown = []
    for server in url.split(","):
        head, separator, rest = server.strip().partition("://")
        if not separator:
            head, rest = "", head
        host = rest.partition("/")[0].partition("?")[0].rpartition("@")[2]
        shown.append(f"{head}{separator}{host}")
    return ",".join(shown)

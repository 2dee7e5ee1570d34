"""One traffic run from start to end: check the target, build the users' requests, run
them, and say what happened (``TrafficRun``); ``shipyard traffic`` and the benchmarks call it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from shipyard.errors import InvalidInputError, UnavailableError
from shipyard.messaging import open_broker, shown_url
from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.connection import Endpoint
from shipyard.traffic.labels import LabelSink
from shipyard.traffic.rows import RowPool
from shipyard.traffic.summary import summary
from shipyard.traffic.targets import (
    BrokerFeedback,
    BrokerTarget,
    HttpFeedback,
    HttpTarget,
    auth_headers,
    check_server,
)
from shipyard.traffic.users import LabelSource, Target, Users

T = TypeVar("T")

#: Seconds a request to check the server (metadata, credentials) may take.
CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Destination:
    """Where the run sends its requests: a server's URL (and more addresses of the same
    service to fail over to), or a broker and its queues."""

    url: str = "http://127.0.0.1:8000"
    broker_url: str | None = None
    queue: str = "transactions"
    results: str = "results"
    api_key: str | None = None
    fallback_urls: tuple[str, ...] = ()
    """Other addresses of the service at ``url`` (a backup load balancer), in order."""

    @property
    def urls(self) -> tuple[str, ...]:
        """Every address of the HTTP service, the first one first."""
        return (self.url, *self.fallback_urls)

    def shown(self, http: bool) -> str:
        """The destination as the display and the summary name it (no secrets)."""
        if http:
            return " or ".join(self.urls)
        assert self.broker_url is not None
        return f"{shown_url(self.broker_url)} ({self.queue} → {self.results})"


@dataclass
class TrafficRun:
    """A run's parts once the target answered; ``users.run()`` runs it."""

    config: TrafficConfig
    pool: RowPool
    destination: Destination
    users: Users
    version: str | None
    """The version the server named before the run (HTTP); None over a broker."""

    def summary(self, now: float) -> dict[str, Any]:
        """The JSON summary: counts, latency, labels, versions, and the options."""
        config = self.config.as_dict()
        config["drift"] = self.pool.scenario
        config["data"] = self.pool.source
        config["rows"] = len(self.pool.normal)
        config["target"] = self.destination.shown(self.config.protocol.is_http)
        return summary(self.users.stats, config, now)


@asynccontextmanager
async def prepared(
    config: TrafficConfig,
    pool: RowPool,
    destination: Destination,
    *,
    trace: Callable[..., None] | None = None,
) -> AsyncIterator[TrafficRun]:
    """Check the options against the rows and the target, connect, and yield the run;
    every connection is closed afterwards. ``UnavailableError`` when the target does not
    answer, ``InvalidInputError`` when the rows cannot serve the options."""
    config.check()
    labelled = config.label_probability > 0
    if labelled and pool.normal.labels is None:
        raise InvalidInputError(
            f"--label-probability needs each row's true label, and {pool.source} has no label "
            "column; name it with --label-column"
        )
    if config.drift_at_s is not None and pool.drifted is None:
        raise InvalidInputError("--drift-at needs --drift SCENARIO: the rows to switch to")
    classes = pool.classes() if labelled and config.label_noise > 0 else []
    if labelled and config.label_noise > 0 and len(classes) < 2:
        raise InvalidInputError(
            f"--label-noise sends a wrong class, and the labels of {pool.source} have one class"
        )
    async with AsyncExitStack() as stack:
        target: Target
        sink: LabelSink | None = None
        version = None
        if config.protocol.is_http:
            endpoints = _endpoints(destination.urls)
            clients = []
            for endpoint in endpoints:
                client = httpx.AsyncClient(
                    base_url=endpoint.url,
                    headers=auth_headers(destination.api_key),
                    timeout=CHECK_TIMEOUT_S,
                )
                stack.push_async_callback(client.aclose)
                clients.append(client)
            served = await check_server(clients, config.protocol, config.model, labels=labelled)
            version = served.version
            pool = pool.select(served.features)
            http = HttpTarget(
                endpoints,
                config.protocol,
                config.model,
                (pool.normal, pool.drifted),
                slots=config.users,
                timeout_s=config.timeout_s,
                headers=auth_headers(destination.api_key),
                start=served.address,
            )
            stack.push_async_callback(http.close)
            target = http
            if labelled:
                at = served.address
                sink = HttpFeedback(
                    clients[at], config.model, fallbacks=[*clients[at + 1 :], *clients[:at]]
                )
        else:
            if destination.broker_url is None:
                raise InvalidInputError("--protocol stream needs a broker: --broker URL")
            broker = open_broker(destination.broker_url)
            queued = BrokerTarget(
                broker,
                (pool.normal, pool.drifted),
                queue=destination.queue,
                results=destination.results,
                timeout_s=config.timeout_s,
            )
            stack.push_async_callback(queued.close)
            await queued.start()
            await _probe(queued, config, destination)
            target = queued
            if labelled:
                sink = BrokerFeedback(broker, config.model, config.timeout_s)
        labels = LabelSource(
            pool.normal.labels, None if pool.drifted is None else pool.drifted.labels, classes
        )
        rows = (len(pool.normal), None if pool.drifted is None else len(pool.drifted))
        users = Users(config, target, rows, labels, sink, trace=trace)
        yield TrafficRun(config, pool, destination, users, version)


def _endpoints(urls: tuple[str, ...]) -> list[Endpoint]:
    """Each address parsed; ``InvalidInputError`` for a malformed or repeated one."""
    endpoints = [Endpoint.parse(url) for url in urls]
    seen: set[tuple[str, int, str]] = set()
    for endpoint in endpoints:
        where = (endpoint.host, endpoint.port, endpoint.prefix)
        if where in seen:
            raise InvalidInputError(
                f"--url {endpoint.url} is given twice; list each address of the service once"
            )
        seen.add(where)
    return endpoints


async def _probe(target: BrokerTarget, config: TrafficConfig, destination: Destination) -> None:
    """One request before the run: a scorer must be answering on the queues."""
    answer = await target.predict(0, False, 0)
    if answer.failure is not None:
        raise UnavailableError(
            f"no result on {destination.results!r} within {config.timeout_s:g} s of publishing "
            f"to {destination.queue!r} ({answer.failure}); start a scorer on this broker: "
            f"`shipyard stream --model {config.model} --queue {destination.queue} "
            f"--results {destination.results}`"
        )


def install_stop(users: Users) -> Callable[[], None]:
    """Ctrl-C stops the users (requests finish, due labels go out, the summary is
    written); a second Ctrl-C interrupts. Returns the function that removes the handler."""
    import signal

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def interrupt() -> None:
        if users.stopping and main is not None:
            main.cancel()
        users.stop()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGINT)

    return remove


def run_on_uvloop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a traffic coroutine function to its end on a new uvloop event loop (the users'
    client sends more requests per core on it than on asyncio's)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())

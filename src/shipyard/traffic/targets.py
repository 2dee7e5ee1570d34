"""Where the users' requests and labels go: a server's HTTP routes or a broker's queues.

Over HTTP each row's request is encoded once, before the run, in the chosen protocol (Open
Inference Protocol, MLflow ``/invocations`` or the plain JSON route); the server assigns
each prediction its id and every answer carries it, which the labels quote back through
``POST /v1/feedback``. A service may have several addresses (two load balancers in front of
the same replicas): a user whose address stops answering — a connection refused, reset or
not made in time — moves on to the next and sends the request again there, since a
prediction changes nothing; each address is tried once per request. An address that
answers, even with a 502 or 503, keeps its users: the balancer behind it is alive.

Over a broker each request is an input message with an id of its own (the stream's message
format: the features and an ``id``), its answer the result that names that id; labels go
to ``<model>.feedback``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson

from shipyard.errors import (
    AuthenticationError,
    InvalidInputError,
    ModelNotFoundError,
    PermissionDeniedError,
    ShipyardError,
    UnavailableError,
)
from shipyard.messaging import Broker, QueueSpec, publish_patiently
from shipyard.monitoring.monitor import feedback_queue
from shipyard.traffic.config import Protocol
from shipyard.traffic.connection import Connections, Endpoint, unreachable
from shipyard.traffic.labels import Label, Sent
from shipyard.traffic.rows import Rows
from shipyard.traffic.users import Answer

JSON = "application/json"
#: The OIP input tensor's name (``server/oip.py``).
OIP_INPUT = "input"
#: The answers' failure kind when an answer names no prediction id.
BAD_ANSWER = "bad answer"
#: How long the broker reader waits for results per consume call (ms).
RESULTS_WAIT_MS = 100
#: How long ``BrokerTarget.close`` waits for its loops' broker calls to return (s).
CLOSE_WAIT_S = 5.0
PUBLISH_CHUNK = 1000
#: Labels per ``<model>.feedback`` message (well under every broker's message size limit).
FEEDBACK_MESSAGE_ITEMS = 1000


def route(protocol: Protocol, model: str) -> str:
    """The path a protocol's request goes to."""
    return {
        Protocol.OIP: f"/v2/models/{model}/infer",
        Protocol.MLFLOW: "/invocations",
        Protocol.JSON: f"/v1/models/{model}:predict",
    }[protocol]


def http_bodies(rows: Rows, protocol: Protocol) -> list[bytes]:
    """One single-row request body per row, in ``protocol``'s shape."""
    names = rows.names
    dumps = orjson.dumps
    values = rows.values.tolist()
    if protocol is Protocol.OIP:
        shape = [1, len(names)]
        return [
            dumps({"inputs": [{"name": OIP_INPUT, "shape": shape, "datatype": "FP32", "data": r}]})
            for r in values
        ]
    if protocol is Protocol.MLFLOW:
        return [dumps({"dataframe_split": {"columns": names, "data": [r]}}) for r in values]
    return [dumps({"instances": [dict(zip(names, r, strict=True))]}) for r in values]


def message_tails(rows: Rows) -> list[bytes]:
    """Each row's features as the rest of a stream input message: ``"name": value, …}``;
    ``{"id": "…",`` goes in front when it is sent."""
    names = rows.names
    return [orjson.dumps(dict(zip(names, r, strict=True)))[1:] for r in rows.values.tolist()]


def read_answer(protocol: Protocol, body: bytes) -> Answer:
    """The prediction id and version a 200 answer names."""
    try:
        answer = orjson.loads(body)
        if protocol is Protocol.OIP:
            ids = next(o["data"] for o in answer["outputs"] if o["name"] == "id")
            return Answer(id=str(ids[0]), version=str(answer["model_version"]))
        if protocol is Protocol.MLFLOW:
            return Answer(id=str(answer["ids"][0]), version=str(answer["version"]))
        prediction = answer["predictions"][0]
        return Answer(id=str(prediction["id"]), version=str(answer["version"]))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, StopIteration):
        return Answer(failure=BAD_ANSWER)


def failure_kind(error: BaseException) -> str:
    """A bounded name for a request that got no response."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if type(error) is ConnectionError:  # the connection's parser refused the bytes
        return "not an HTTP response"
    return f"connection: {type(error).__name__}"


class HttpTarget:
    """Single-row predictions from a server's route, a keep-alive connection per user and
    address; each user sends to its current address and moves on to the next when that one
    is unreachable (every user starts on the address ``start``)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        protocol: Protocol,
        model: str,
        rows: tuple[Rows, Rows | None],
        *,
        slots: int,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        start: int = 0,
    ) -> None:
        self.protocol = protocol
        self.endpoints = list(endpoints)
        self.connections = [Connections(endpoint, slots, timeout_s) for endpoint in endpoints]
        self._at = [start] * slots
        path = route(protocol, model)
        head = {"Content-Type": JSON, **(headers or {})}
        bodies = [http_bodies(part, protocol) if part is not None else [] for part in rows]
        # Per address: the Host header differs (and the URL's path prefix may).
        self._requests = [
            [[endpoint.request(path, body, head) for body in part] for part in bodies]
            for endpoint in endpoints
        ]

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        """One request on ``slot``'s connection to its address, then to the next ones."""
        count = len(self.endpoints)
        at = self._at[slot]
        failovers = 0
        while True:
            try:
                status, body = await self.connections[at].exchange(
                    slot, self._requests[at][drifted][row]
                )
                break
            except OSError as error:  # TimeoutError and ConnectionError included
                if not unreachable(error) or failovers == count - 1:
                    return Answer(
                        failure=failure_kind(error),
                        failovers=failovers,
                        address=self.endpoints[at].url if count > 1 else None,
                    )
                failovers += 1
                at = self._at[slot] = (at + 1) % count
        if status != 200:
            answer = Answer(failure=f"HTTP {status}")
        else:
            answer = read_answer(self.protocol, body)
        if count == 1:  # the common case, on the path every request takes: no copy
            return answer
        return replace(answer, failovers=failovers, address=self.endpoints[at].url)

    async def close(self) -> None:
        """Close the connections."""
        for connections in self.connections:
            connections.close()


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` with the API key or token, when there is one."""
    return {} if api_key is None else {"Authorization": f"Bearer {api_key}"}


@dataclass(frozen=True)
class ServedModel:
    """What the server says of the model before the run."""

    features: list[str]
    version: str
    address: int = 0
    """Which of the addresses answered (the first that did)."""


async def check_server(
    clients: Sequence[httpx.AsyncClient], protocol: Protocol, model: str, *, labels: bool
) -> ServedModel:
    """The model's features and version from ``GET /v2/models/MODEL`` at the first of the
    service's addresses that answers, after checking that it serves the model (the default
    one, for MLflow) and, when labels are sent, takes the credentials for ``POST
    /v1/feedback``; a clear error otherwise. Addresses that do not answer are left for the
    users to fail over from: a backup balancer may be down when the run starts."""
    unreachable = []
    for address, client in enumerate(clients):
        url = str(client.base_url).rstrip("/")
        try:
            response = await client.get(f"/v2/models/{model}")
        except httpx.HTTPError as error:
            unreachable.append(f"{url} ({type(error).__name__}: {error})")
            continue
        served = await _check_answer(client, response, url, protocol, model, labels=labels)
        return replace(served, address=address)
    raise UnavailableError(
        f"nothing answers at {' nor at '.join(unreachable)}; start a server there "
        f"(`shipyard serve --models {model}`) or point --url at one"
    )


async def _check_answer(
    client: httpx.AsyncClient,
    response: httpx.Response,
    url: str,
    protocol: Protocol,
    model: str,
    *,
    labels: bool,
) -> ServedModel:
    _raise_for_access(response, url, "inference", "viewer")
    if response.status_code == 404:
        raise ModelNotFoundError(
            f"the server at {url} does not serve {model!r} ({_message(response)}); "
            "name a model it serves with --model"
        )
    if response.status_code != 200:
        raise UnavailableError(
            f"GET {url}/v2/models/{model} answered {response.status_code}: {_message(response)}"
        )
    metadata = response.json()
    if protocol is Protocol.MLFLOW:
        default = (await client.get("/")).json().get("default_model")
        if default != model:
            raise InvalidInputError(
                f"/invocations on {url} scores the server's default model ({default}), not "
                f"{model!r}; use --protocol oip or json, or --model {default}"
            )
    if labels:
        probe = await client.post("/v1/feedback", json={"model": model, "feedback": []})
        _raise_for_access(probe, url, "POST /v1/feedback", "operator")
    parameters = metadata["parameters"]
    return ServedModel([str(f) for f in parameters["features"]], str(parameters["version"]))


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]


def _raise_for_access(response: httpx.Response, url: str, what: str, role: str) -> None:
    hint = (
        f"give an API key or token with the {role} role: --api-key KEY or SHIPYARD_API_KEY "
        f"(`shipyard users api-key create traffic --role {role}`)"
    )
    if response.status_code == 401:
        raise AuthenticationError(
            f"{what} on {url} needs credentials ({_message(response)}); {hint}"
        )
    if response.status_code == 403:
        raise PermissionDeniedError(
            f"{what} on {url} refused the credentials ({_message(response)}); {hint}"
        )


#: An HTTP client's failures that say nothing answers at an address (``unreachable``).
HTTP_UNREACHABLE = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class HttpFeedback:
    """Labels as ``POST /v1/feedback`` batches, to ``client``'s server or, once it stops
    answering, to the next of ``fallbacks`` (other addresses of the same service)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        model: str,
        *,
        fallbacks: Sequence[httpx.AsyncClient] = (),
    ) -> None:
        self.clients = [client, *fallbacks]
        self.model = model
        self._at = 0

    async def send(self, labels: Sequence[Label]) -> Sent:
        """One batch; a 5xx or a lost connection may pass, 401/403 stop the run."""
        items = [{"id": label.id, "label": label.label} for label in labels]
        content = orjson.dumps({"model": self.model, "feedback": items})
        for tried in range(len(self.clients)):
            try:
                response = await self.clients[self._at].post(
                    "/v1/feedback", content=content, headers={"Content-Type": JSON}
                )
                break
            except HTTP_UNREACHABLE as error:
                if tried == len(self.clients) - 1:
                    return Sent(failure=f"connection: {type(error).__name__}", retryable=True)
                # A batch the server took before the cut comes again: it counts duplicates.
                self._at = (self._at + 1) % len(self.clients)
            except httpx.HTTPError as error:
                return Sent(failure=f"connection: {type(error).__name__}", retryable=True)
        status = response.status_code
        if status == 200:
            return Sent()
        failure = f"HTTP {status}"
        if status in (401, 403):
            return Sent(
                failure, fatal=f"POST /v1/feedback refused the credentials: {_message(response)}"
            )
        return Sent(failure, retryable=status >= 500 or status == 429)

    async def close(self) -> None:
        """Close the HTTP clients."""
        for client in self.clients:
            await client.aclose()


@dataclass
class _Waiting:
    futures: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)
    outbox: list[tuple[str, bytes]] = field(default_factory=list)


class BrokerTarget:
    """Predictions through a scorer: publish an input message, wait for its result."""

    def __init__(
        self,
        broker: Broker,
        rows: tuple[Rows, Rows | None],
        *,
        queue: str,
        results: str,
        timeout_s: float,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.results = results
        self.timeout_s = timeout_s
        self.foreign_results = 0
        """Results on the queue that answer no request of this run."""
        self._tails = [message_tails(part) if part is not None else [] for part in rows]
        self._prefix = uuid.uuid4().hex[:12]
        self._numbers = itertools.count()
        self._waiting = _Waiting()
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Declare the queues and start publishing and reading results."""
        await self.broker.declare(QueueSpec(self.queue))
        await self.broker.declare(QueueSpec(self.results))
        self._tasks = [
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._read_loop()),
        ]

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        """Publish the row (batched with the other users'), wait for its result."""
        loop = asyncio.get_running_loop()
        message_id = f"{self._prefix}-{next(self._numbers)}"
        body = b'{"id":"' + message_id.encode() + b'",' + self._tails[drifted][row]
        waiter: asyncio.Future[str | None] = loop.create_future()
        self._waiting.futures[message_id] = waiter
        self._waiting.outbox.append((message_id, body))
        self._wake.set()
        timer = loop.call_later(self.timeout_s, _time_out, waiter)
        try:
            version = await waiter
        except TimeoutError:
            return Answer(failure="timeout")
        except ShipyardError as error:
            return Answer(failure=f"publish: {type(error).__name__}")
        finally:
            timer.cancel()
            self._waiting.futures.pop(message_id, None)
        return Answer(id=message_id, version=version)

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            while self._waiting.outbox:
                batch = self._waiting.outbox[:PUBLISH_CHUNK]
                del self._waiting.outbox[:PUBLISH_CHUNK]
                deadline = loop.time() + self.timeout_s
                try:
                    await publish_patiently(
                        self.broker,
                        self.queue,
                        [body for _, body in batch],
                        give_up=functools.partial(_past, loop, deadline),
                    )
                except ShipyardError as error:
                    for message_id, _ in batch:
                        waiter = self._waiting.futures.get(message_id)
                        if waiter is not None and not waiter.done():
                            waiter.set_exception(error)

    async def _read_loop(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                deliveries = await self.broker.consume(self.results, 1000, RESULTS_WAIT_MS)
            except UnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for delivery in deliveries:
                self._answer(delivery.body)
            if deliveries:
                try:
                    await self.broker.ack(self.results, deliveries)
                except UnavailableError:
                    continue  # redelivered later; a second answer to an id is ignored

    def _answer(self, body: bytes) -> None:
        try:
            result = orjson.loads(body)
            message_id = result["id"]
            version = result.get("version")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.foreign_results += 1
            return
        waiter = self._waiting.futures.get(message_id) if isinstance(message_id, str) else None
        if waiter is None:
            self.foreign_results += 1
        elif not waiter.done():
            waiter.set_result(None if version is None else str(version))

    async def close(self) -> None:
        """Stop publishing and reading; close the broker connection.

        The loops are told to stop and end after the broker call they are in (a consume
        waits ``RESULTS_WAIT_MS`` at most) rather than cancelled in it: redis-py's client
        can be left waiting for ever by a command cancelled midway. One that has not ended
        within ``CLOSE_WAIT_S`` (a broker that stopped answering) is cancelled then."""
        self._closing = True
        self._wake.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=CLOSE_WAIT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.close()


def _past(loop: asyncio.AbstractEventLoop, deadline: float) -> bool:
    return loop.time() > deadline


def _time_out(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no result in time"))


class BrokerFeedback:
    """Labels as messages (a JSON list of ``{id, label}``) on ``<model>.feedback``."""

    def __init__(self, broker: Broker, model: str, timeout_s: float) -> None:
        self.broker = broker
        self.queue = feedback_queue(model)
        self.timeout_s = timeout_s
        self._declared = False

    async def send(self, labels: Sequence[Label]) -> Sent:
        """One message per batch; a broker that stays unreachable may come back."""
        items = [{"id": label.id, "label": label.label} for label in labels]
        bodies = [
            orjson.dumps(items[start : start + FEEDBACK_MESSAGE_ITEMS])
            for start in range(0, len(items), FEEDBACK_MESSAGE_ITEMS)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            if not self._declared:
                await self.broker.declare(QueueSpec(self.queue))
                self._declared = True
            await publish_patiently(
                self.broker, self.queue, bodies, give_up=functools.partial(_past, loop, deadline)
            )
        except ShipyardError as error:
            return Sent(failure=f"broker: {type(error).__name__}", retryable=True)
        return Sent()

    async def close(self) -> None:
        """Nothing of its own: the broker connection is the target's."""

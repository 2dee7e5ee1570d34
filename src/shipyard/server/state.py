"""What every route of one server process shares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import Request

from shipyard.inference.images import ImageFetcher
from shipyard.inference.service import InferenceService
from shipyard.messaging import Broker, QueueSpec, open_broker
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.monitoring.recorder import PredictionRecorder
from shipyard.registry import Registry
from shipyard.settings import Settings


@dataclass
class ServerState:
    """Settings, registry and the inference core of this process."""

    settings: Settings
    registry: Registry
    service: InferenceService
    recorder: PredictionRecorder | None = None
    """Where answered predictions are logged (None: logging is off): the service tells it
    each batch's requests that came with ids (``InferenceService.infer``)."""
    ready: bool = False
    fetcher: ImageFetcher = field(init=False)
    """Fetches the images named by URL, within the ``image_url_*`` settings."""
    _broker: Broker | None = field(default=None, init=False)
    _embedded: EmbeddedNats | None = field(default=None, init=False)
    _declared: set[str] = field(default_factory=set, init=False)
    _broker_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.fetcher = ImageFetcher.from_settings(self.settings)

    async def broker_for(self, queue: str) -> Broker:
        """The broker the publishing route uses, connected on first use (the home's
        embedded NATS server when no URL is configured), with ``queue`` declared."""
        async with self._broker_lock:
            if self._broker is None:
                url = self.settings.broker_url
                if not url:
                    self._embedded = EmbeddedNats(self.settings.home)
                    url = await asyncio.to_thread(self._embedded.start)
                self._broker = open_broker(url)
            if queue not in self._declared:
                await self._broker.declare(QueueSpec(queue))
                self._declared.add(queue)
            return self._broker

    async def close_broker(self) -> None:
        """Close the broker connection; stop the embedded server if this process started it."""
        if self._broker is not None:
            await self._broker.close()
            self._broker = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    @property
    def default_model(self) -> str | None:
        """The model ``/invocations`` serves: the first of ``serve_models``."""
        return self.settings.serve_models[0] if self.settings.serve_models else None


def state_of(request: Request) -> ServerState:
    """The server state attached to the app."""
    state: ServerState = request.app.state.shipyard
    return state

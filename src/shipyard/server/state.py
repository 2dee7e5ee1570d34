"""What every route of one server process shares."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from shipyard.inference.service import InferenceService
from shipyard.registry import Registry
from shipyard.settings import Settings


@dataclass
class ServerState:
    """Settings, registry and the inference core of this process."""

    settings: Settings
    registry: Registry
    service: InferenceService
    ready: bool = False

    @property
    def default_model(self) -> str | None:
        """The model ``/invocations`` serves: the first of ``serve_models``."""
        return self.settings.serve_models[0] if self.settings.serve_models else None


def state_of(request: Request) -> ServerState:
    """The server state attached to the app."""
    state: ServerState = request.app.state.shipyard
    return state

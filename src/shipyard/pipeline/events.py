"""Stage events: what puts one stage of one run on the broker for the stage workers.

An event is JSON ``{"run": ID, "stage": NAME, "inputs": {PART: SHA256, …}}`` on the queue
``<prefix>.<stage>`` (``pipeline.train``): the run's id and the digests, in the artifact
store, of what the earlier stages produced (``pipeline.handoff``) — never the data itself,
so that a worker on another host that shares the registry database and artifact store can
take it. ``submit_run`` records a queued run, puts its data file in the store and
publishes the first stage's event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from shipyard.errors import InvalidInputError, ShipyardError
from shipyard.messaging import Broker, QueueSpec, publish_patiently
from shipyard.pipeline.handoff import first_state
from shipyard.pipeline.spec import Spec
from shipyard.pipeline.stages import STAGES
from shipyard.pipeline.training import queue_run
from shipyard.registry import Registry

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
"""The stages in the order a run goes through them."""

MAX_EVENT_BYTES = 64 * 1024


@dataclass(frozen=True)
class StageEvent:
    """One stage of one run to be done, with the digests of its inputs."""

    run: str
    stage: str
    inputs: dict[str, str]

    def to_bytes(self) -> bytes:
        """The event as the JSON a queue holds."""
        return orjson.dumps({"run": self.run, "stage": self.stage, "inputs": self.inputs})

    @classmethod
    def parse(cls, body: bytes, stage: str | None = None) -> StageEvent:
        """The event in ``body``; ``InvalidInputError`` saying what is wrong with it. With
        ``stage``, an event for another stage (sent to the wrong queue) is refused too."""
        if len(body) > MAX_EVENT_BYTES:
            raise InvalidInputError(
                f"a stage event of {len(body)} bytes; events carry digests, never data "
                f"(at most {MAX_EVENT_BYTES} bytes)"
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise InvalidInputError(f"a stage event that is not JSON: {error}") from None
        if not isinstance(payload, dict):
            raise InvalidInputError('a stage event is {"run": ID, "stage": NAME, "inputs": {}}')
        run, name, inputs = payload.get("run"), payload.get("stage"), payload.get("inputs", {})
        if not isinstance(run, str) or not run:
            raise InvalidInputError('a stage event without its run id ("run": "…")')
        if name not in STAGE_NAMES:
            raise InvalidInputError(
                f"a stage event for stage {name!r}; the stages are {', '.join(STAGE_NAMES)}"
            )
        if stage is not None and name != stage:
            raise InvalidInputError(f"an event for stage {name!r} on the queue of {stage!r}")
        if not isinstance(inputs, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in inputs.items()
        ):
            raise InvalidInputError('a stage event\'s "inputs" maps names to sha256 digests')
        return cls(run, str(name), dict(inputs))

    def next(self, inputs: Mapping[str, str]) -> StageEvent | None:
        """The event of the stage after this one with ``inputs``; None after the last."""
        position = STAGE_NAMES.index(self.stage)
        if position + 1 == len(STAGE_NAMES):
            return None
        return StageEvent(self.run, STAGE_NAMES[position + 1], dict(inputs))


def stage_queue(prefix: str, stage: str) -> QueueSpec:
    """How the queue of ``stage`` is declared: ``<prefix>.<stage>``, dead letters on
    ``<prefix>.<stage>.dead``."""
    return QueueSpec(f"{prefix}.{stage}")


async def publish_event(
    broker: Broker, prefix: str, event: StageEvent, *, declare: bool = True
) -> None:
    """Put ``event`` on its stage's queue (declared first unless ``declare`` is false: a
    stage worker declares every stage's queue once, when it starts); waits while the queue
    is full and retries an unreachable broker for a few seconds before raising."""
    spec = stage_queue(prefix, event.stage)
    if declare:
        await broker.declare(spec)
    tries = iter(range(20))
    await publish_patiently(
        broker, spec.name, [event.to_bytes()], give_up=lambda: next(tries, None) is None
    )


async def submit_run(
    registry: Registry,
    broker: Broker,
    spec: Spec,
    spec_text: str,
    *,
    prefix: str,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Record a queued run of ``spec``, put its data file in the artifact store and publish
    its first stage's event; returns the run's id. A broker that does not take the event
    fails the run at once (and the error is raised)."""
    run_id = queue_run(registry, spec, spec_text)
    inputs: dict[str, str] = {}
    path: Path | None = spec.data.path
    try:
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError as error:
                raise InvalidInputError(f"cannot read the data file {path}: {error}") from error
            inputs["data"] = registry.store.put(data)
        inputs["state"] = registry.store.put(
            first_state(path.name if path is not None else None, tags)
        )
        await publish_event(broker, prefix, StageEvent(run_id, STAGE_NAMES[0], inputs))
    except ShipyardError as error:
        registry.runs.finish(run_id, "failed", f"the run could not be submitted: {error}")
        raise
    return run_id

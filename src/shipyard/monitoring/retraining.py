"""When a model is retrained: the spec's ``retrain:`` section, the triggers, the hand-off.

The register stage stores the section, validated, as JSON in the version's ``retrain`` tag
(as ``monitoring:`` is stored in ``monitoring``), so a monitor knows each production
version's rules without its spec file::

    retrain:
      triggers:
        drift.detected: true              # on a drift episode of the production version
        performance.degraded: {margin: 0.05}   # live metric this far below the offline one
        schedule: {every: 6h}             # also every 6 hours (default: no schedule)
        manual: true                      # `shipyard retrain NAME` is allowed
      data:
        last: 50000        # the newest N labelled predictions (log joined with feedback)
        since: 7d          # ... made within this long (default: the whole retained log)
        original: 0.2      # plus this share of the current version's training rows
        min_rows: 500      # fewer labelled rows: skipped
        after_trigger: 0   # a drift/performance trigger waits for this many labelled
                           # predictions made after its event (default: none)
      gate:
        metric: average_precision   # default: the spec's promotion metric
        min_delta: 0.01    # the candidate must beat production by this much ...
        holdout: 0.3       # ... on the newest 30 % of the labelled rows, kept out of training
        shadow: 500        # then score live requests in shadow until 500 of them are
                           # labelled, and beat production on those too (default: no shadow)
        shadow_timeout: 1h # a shadow with fewer labels by then is abandoned
      cooldown: 1h         # after a retrain finished, the next waits this long

The monitor decides *when* (``RetrainWatch``: the triggers, one trigger at a time) and hands
the work to a ``Retrainer`` it is given — the pipeline's, built by ``shipyard monitor`` —
which takes the model's retrain lock (one retrain per model in flight, a cooldown between
them), trains, gates and promotes, and records every decision as an event.

With ``gate.shadow`` the hold-out winner is not promoted: it gets the ``shadow`` alias
(``retrain.shadowing``), servers and scorers score every answered request with it too and
log those predictions under its version with the same ids, and each monitor pass asks the
retrainer to ``follow_shadow`` (so does ``shipyard retrain``, before retraining): once N of
the requests both versions scored are labelled, both are judged on exactly the first N of
them, or on to the first label of the other class when those N hold one class only
(``model.promoted`` or ``retrain.gated``, lost); at ``shadow_timeout`` with fewer,
``retrain.abandoned``. No retrain of the model starts while its shadow is open; the alias
and the event are the state, so a restarted monitor goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from shipyard.errors import InvalidInputError, NotFoundError
from shipyard.registry import DEFAULT_ALIAS, ModelRef

if TYPE_CHECKING:
    from shipyard.registry import ModelVersionInfo, Registry
    from shipyard.registry.events import EventRecord
    from shipyard.registry.monitoring import MonitoringStore

logger = logging.getLogger(__name__)

#: The version tag that holds the spec's ``retrain`` section as JSON.
TAG = "retrain"
#: The version tag that names the retrain attempt a candidate was trained by.
ATTEMPT_TAG = "retrain_attempt"
#: The events that may trigger a retrain, and the other kinds of trigger.
DRIFT, DEGRADED, SCHEDULE, MANUAL = "drift.detected", "performance.degraded", "schedule", "manual"
#: The monitor's store cursor: the id of the last event it considered as a trigger.
CURSOR = "retrain"
#: Events read per cycle when looking for triggers.
EVENTS_PAGE = 1000

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def seconds(value: Any) -> Any:
    """A duration as seconds: a number, or text such as ``90s``, ``30m``, ``6h``, ``7d``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; write a number of seconds or e.g. 90s, 30m, 6h, 7d"
            )
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(seconds), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PerformanceTrigger(_Strict):
    """Retrain on ``performance.degraded``."""

    margin: float | None = Field(
        default=None,
        ge=0,
        description="retrain only when the live metric is at least this far below the "
        "offline one (default: on every performance.degraded event)",
    )


class ScheduleTrigger(_Strict):
    """Retrain every so often, whatever the evidence."""

    every: Seconds


def _switch(value: Any) -> Any:
    """``true`` / ``false`` for a trigger that has settings: on with defaults, or off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class TriggersSpec(_Strict):
    """What starts a retrain."""

    drift: bool = Field(default=True, alias="drift.detected")
    performance: Annotated[PerformanceTrigger | None, BeforeValidator(_switch)] = Field(
        default_factory=PerformanceTrigger, alias="performance.degraded"
    )
    schedule: ScheduleTrigger | None = None
    manual: bool = True


class RetrainDataSpec(_Strict):
    """The rows a retrain trains on."""

    last: int | None = Field(default=50_000, gt=0, description="the newest N labelled rows")
    since: Seconds | None = Field(default=None, description="labelled rows this recent")
    original: float = Field(
        default=0.0, ge=0, le=1, description="share of the current version's training rows"
    )
    min_rows: int = Field(default=500, gt=1, description="fewer labelled rows: no retrain")
    after_trigger: int = Field(
        default=0,
        ge=0,
        description="a drift or performance trigger waits until this many of the labelled "
        "rows are predictions made after its event, so the candidate learns what changed",
    )


class GateSpec(_Strict):
    """What a candidate must do to be promoted."""

    metric: str | None = Field(default=None, description="default: the promotion metric")
    min_delta: float = Field(default=0.01, ge=0)
    holdout: float = Field(default=0.3, gt=0, lt=1)
    shadow: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="after the hold-out, score live requests in shadow until this many "
        "labelled predictions, then judge again on them (default: promote at once)",
    )
    shadow_timeout: Seconds = Field(
        default=3600.0, description="a shadow with too few labels by then is abandoned"
    )


class RetrainSpec(_Strict):
    """A model's retraining rules; every part has defaults."""

    triggers: TriggersSpec = TriggersSpec()
    data: RetrainDataSpec = RetrainDataSpec()
    gate: GateSpec = GateSpec()
    cooldown: Seconds = 3600.0

    def to_tag(self) -> str:
        """The JSON stored in the version's ``retrain`` tag."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> RetrainSpec | None:
        """The rules a version was registered with; None when its spec had no section."""
        text = tags.get(TAG)
        if not text:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as error:
            raise InvalidInputError(
                f"the version's {TAG!r} tag is not a valid retrain section ({error}); "
                "register the version again from a spec whose `retrain:` validates"
            ) from error


@dataclass(frozen=True)
class Trigger:
    """Why a retrain is asked for: the kind, a key unique to this occasion, the evidence."""

    kind: str
    key: str
    version: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    """When the triggering event was recorded (None for a schedule or a hand)."""

    def document(self) -> dict[str, Any]:
        """As recorded in the events' evidence."""
        return {"kind": self.kind, "key": self.key, "version": self.version}


Status = Literal["promoted", "lost", "failed", "skipped", "waiting", "shadowing", "abandoned"]


@dataclass(frozen=True)
class RetrainOutcome:
    """How a retrain ended: ``promoted``, ``lost`` (the gate), ``failed``, ``skipped`` (it
    will not run for this trigger), ``waiting`` (refused for now: cooldown, in flight, a
    shadow open, too few labelled rows or one class in the gate's rows; the trigger is asked
    again) or ``shadowing`` (the candidate won the hold-out and now scores live requests in
    shadow). A shadow ends ``promoted``, ``lost`` or ``abandoned`` (too few labels in time)."""

    model: str
    status: Status
    reason: str
    candidate: int | None = None
    events: list[EventRecord] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Whether the trigger is dealt with (``waiting``: ask again later)."""
        return self.status != "waiting"


class Retrainer(Protocol):
    """Retrains a model for a trigger: lock, data, training, gate, promotion, events."""

    def retrain(self, model: str, trigger: Trigger) -> RetrainOutcome:
        """Do it (or refuse, saying why); never raises for a retrain that fails."""
        ...

    def follow_shadow(self, model: str) -> RetrainOutcome | None:
        """Judge the model's candidate in shadow if it has enough labels (or its time is
        up); None when no shadow is open, ``shadowing`` while it goes on."""
        ...


class RetrainWatch:
    """Finds, cycle after cycle, what should retrain a model the monitor owns."""

    def __init__(self, registry: Registry, alias: str = DEFAULT_ALIAS) -> None:
        self.registry = registry
        self.alias = alias

    def due(
        self, model: str, store: MonitoringStore, now: datetime
    ) -> tuple[Trigger | None, int | None]:
        """The trigger to hand to the retrainer now, if any, and where the event cursor
        moves once it is dealt with (None: it stays)."""
        try:
            production = self.registry.get_version(ModelRef(model, None, self.alias))
        except NotFoundError:
            return None, None
        rules = RetrainSpec.from_tags(production.tags)
        saved = store.cursor(model, CURSOR)
        after = int(saved["id"]) if saved else 0
        events = store.events(model, after_id=after, limit=EVENTS_PAGE)
        moved = events[-1].id if events else None
        found = [e for e in events if e.version == production.version and _wanted(e, rules)]
        if found:
            event = found[-1]  # the newest evidence stands for the older
            trigger = Trigger(event.kind, event.key, event.version, dict(event.evidence), event.at)
            return trigger, moved
        if moved is not None:  # nothing wanted among them: move past at once
            store.save_cursor(model, CURSOR, {"id": moved})
        if rules is not None and rules.triggers.schedule is not None:
            every = rules.triggers.schedule.every
            last = self.registry.retraining.last_started(model)
            since = max(last or production.created_at, production.created_at)
            if now - since >= timedelta(seconds=every):
                slot = math.floor(now.timestamp() / every)
                evidence = {"every_s": every, "since": since.isoformat()}
                return Trigger(SCHEDULE, f"{SCHEDULE}:{slot}", production.version, evidence), None
        return None, None


def _wanted(event: EventRecord, rules: RetrainSpec | None) -> bool:
    """Whether an event triggers a retrain under ``rules`` (None: no section, so any
    trigger kind is passed on, to be skipped with that reason)."""
    if event.kind not in (DRIFT, DEGRADED):
        return False
    if rules is None:
        return True
    triggers = rules.triggers
    if event.kind == DRIFT:
        return triggers.drift
    if triggers.performance is None:
        return False
    margin = triggers.performance.margin
    if margin is None:
        return True
    return shortfall(event.evidence) >= margin


def shortfall(evidence: Mapping[str, Any]) -> float:
    """How far a ``performance.degraded`` event's live metric is below the offline one, in
    the metric's better direction (0 when the evidence lacks either)."""
    live, offline = evidence.get("live"), evidence.get("offline")
    if not isinstance(live, int | float) or not isinstance(offline, int | float):
        return 0.0
    lower_is_better = evidence.get("metric") in ("brier", "mae", "rmse")
    return float(live - offline) if lower_is_better else float(offline - live)


def production_rules(info: ModelVersionInfo) -> RetrainSpec | None:
    """The retrain rules the version was registered with (None: no ``retrain:``)."""
    return RetrainSpec.from_tags(info.tags)


class RetrainTasks:
    """The retrains a monitor runs: at most one per model at a time, each in a thread of its
    own so that the monitor's cycles (and its lease renewals) go on while a model trains.

    ``consider`` asks the watch whether an owned model is due and starts its retrain; once a
    retrain has dealt with its trigger (any outcome but ``waiting``) the event cursor moves
    past the evidence it considered. ``outcomes`` collects what finished, for the cycle's
    report and the metrics.
    """

    def __init__(
        self,
        registry: Registry,
        retrainer: Retrainer,
        *,
        on_outcome: Callable[[RetrainOutcome], None] | None = None,
    ) -> None:
        self.watch = RetrainWatch(registry)
        self.retrainer = retrainer
        self.on_outcome = on_outcome
        self.running: dict[str, asyncio.Task[None]] = {}
        self.outcomes: dict[str, RetrainOutcome] = {}

    async def consider(self, model: str, store: MonitoringStore, now: datetime) -> bool:
        """Start the model's retrain if it is due and none runs here; whether one started.

        A candidate in shadow is followed first: while it runs no retrain starts (its
        triggers wait, unconsumed), and its verdict is an outcome like a retrain's."""
        if model in self.running:
            return False
        shadow = await asyncio.to_thread(self.retrainer.follow_shadow, model)
        if shadow is not None:
            if shadow.status != "shadowing":
                self.outcomes[model] = shadow
                if self.on_outcome is not None:
                    self.on_outcome(shadow)
            return False
        trigger, moved = await asyncio.to_thread(self.watch.due, model, store, now)
        if trigger is None:
            return False
        self.running[model] = asyncio.create_task(self._retrain(model, trigger, moved, store))
        return True

    async def _retrain(
        self, model: str, trigger: Trigger, moved: int | None, store: MonitoringStore
    ) -> None:
        try:
            outcome = await asyncio.to_thread(self.retrainer.retrain, model, trigger)
            self.outcomes[model] = outcome
            if self.on_outcome is not None:
                self.on_outcome(outcome)
            if outcome.done and moved is not None:
                await asyncio.to_thread(store.save_cursor, model, CURSOR, {"id": moved})
        except Exception:  # the retrainer tells its failures in events; this is the rest
            logger.exception("retraining %s failed", model)
        finally:
            self.running.pop(model, None)

    def take_outcomes(self) -> dict[str, RetrainOutcome]:
        """The outcomes of the retrains that finished since the last call."""
        outcomes, self.outcomes = self.outcomes, {}
        return outcomes

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the running retrains, at most ``timeout`` seconds. A thread cannot be
        stopped: one still training goes on (renewing its lock) and the process waits for
        it before it exits; killed meanwhile, its lock expires and the next retrain to take
        the lock abandons the attempt."""
        tasks = list(self.running.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for model in [m for m, task in self.running.items() if task in pending]:
            logger.warning(
                "the retrain of %s still runs after %s s: it goes on training and renewing its "
                "lock, and the process exits once it ends (killed before, its lock expires "
                "and the next retrain abandons it)",
                model,
                timeout,
            )

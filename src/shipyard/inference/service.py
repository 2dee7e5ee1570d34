"""The I/O-free inference core shared by the HTTP server and the stream scorer.

``InferenceService`` resolves ``name``, ``name:version`` or ``name@alias`` through the
registry, loads verified predictors, validates inputs and runs them through one ``Batcher``
per loaded version. A background task re-resolves the aliases it serves every
``poll_seconds``: when one has moved, the new version is loaded first and then takes new
requests, while batches already queued on the old version finish there.

``infer`` is the one call an adapter makes: it resolves the reference once and decodes the
request with that version's feature layout, checks it and runs it on that same version — so a
swap to a version whose features come in another order can never have rows decoded for one
version predicted by another. When a swap closes the batcher in between, the request is
decoded again for the new version.

**Answered rows.** A request given to ``infer`` with ``ids`` (one prediction id a row) is
told, with its batch's other such requests, to ``hooks.answered`` once the batch is answered
— one ``ScoredRows`` a batch, each row with its own latency — and handed to the shadow, if
any: an adapter's prediction log costs a call a batch rather than one a request.

**Shadows.** A served model whose ``shadow`` alias points at a version (a retrained
candidate, ``retrain.gate.shadow``) has that version loaded too (``inference/shadows.py``):
answered rows with ids (above; an adapter that logs its own batches calls ``shadow``
itself) are scored with it off the response path, and ``hooks.shadowed`` logs them under
its version with the same ids. The shadow alias is followed with the others.

In serving, a bare ``name`` means ``name@<default alias>`` (``production``): a server serves
what is promoted, not whatever was registered last.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from shipyard.errors import BatcherClosedError, ShipyardError
from shipyard.inference.batcher import BatchAnswered, Batcher, BatchObserver
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import (
    Features,
    Outputs,
    Predictor,
    ScoredRows,
    load_predictor,
)
from shipyard.inference.shadows import Shadows, VersionKey
from shipyard.registry import DEFAULT_ALIAS, SHADOW_ALIAS, ModelRef, ModelVersionInfo, Registry

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A verified, loaded model version with its batcher."""

    info: ModelVersionInfo
    predictor: Predictor
    layout: FeatureLayout
    batcher: Batcher

    @property
    def key(self) -> VersionKey:
        """(name, version)."""
        return (self.info.name, self.info.version)


class DecodedRows(Protocol):
    """A decoded request that carries more than its rows (a stream batch: ids, refusals)."""

    @property
    def features(self) -> Features:
        """The rows to predict, checked, in the layout's feature order."""
        ...


Decoded = TypeVar("Decoded", bound="Features | DecodedRows")


class Inference(NamedTuple, Generic[Decoded]):
    """Outputs of one request, the version that produced them and the request as decoded
    for that version (a tuple: half the cost of a frozen dataclass, made once a request)."""

    model: str
    version: int
    outputs: Outputs
    layout: FeatureLayout
    """The feature layout of the version that answered."""
    decoded: Decoded
    """What the decoder made of the request for that version."""
    classes: Sequence[Any] = ()
    """The version's classes, in the order of its probabilities (none for a regressor)."""
    ids: Sequence[str] = ()
    """Each row's prediction id, when ``infer`` was given ``ids``."""


class _Asked(NamedTuple):
    """What a request with ids carries through its batcher (its ``note``)."""

    ids: Sequence[str]
    started: float
    """The request's arrival, a ``time.perf_counter()``."""


@dataclass
class ServiceHooks:
    """Callbacks an adapter gives the core (metrics, logs); all optional."""

    observer: Callable[[str, int], BatchObserver | None] = lambda name, version: None
    load_failed: Callable[[str, ShipyardError], None] = lambda name, error: None
    swapped: Callable[[str, int, int], None] = lambda ref, old, new: None
    answered: Callable[[ScoredRows], None] | None = None
    """Log the rows of a batch's answered requests that came with ids (an adapter's
    prediction log); once a batch, on the event loop: it must not wait."""
    shadowed: Callable[[ScoredRows], None] = lambda scored: None
    """Log what a version in shadow scored (an adapter's prediction log)."""
    shadow_dropped: Callable[[str, int], None] = lambda name, rows: None
    """Rows the shadow did not score: its queue was full, or it failed."""


@dataclass
class InferenceService:
    """Loaded model versions behind batchers, kept in step with the registry's aliases."""

    registry: Registry
    max_batch_size: int = 64
    max_batch_delay_ms: float = 2.0
    predict_in_thread: bool = False
    poll_seconds: float = 1.0
    default_alias: str = DEFAULT_ALIAS
    hooks: ServiceHooks = field(default_factory=ServiceHooks)
    shadow_alias: str | None = SHADOW_ALIAS
    """The alias whose version scores served requests in shadow (None: no shadows)."""
    shadow_queue: int = 256
    """Answered batches (a server's: up to ``max_batch_size`` rows each; a scorer's: its
    batch) waiting for the shadow at most; more are dropped and counted."""
    _shadows: Shadows = field(init=False)
    _models: dict[VersionKey, LoadedModel] = field(default_factory=dict, init=False)
    _routes: dict[str, VersionKey] = field(default_factory=dict, init=False)
    _canonical: dict[str, str] = field(default_factory=dict, init=False)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False)
    _poller: asyncio.Task[None] | None = field(default=None, init=False)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _refused: set[VersionKey] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        # The hooks are read when called: an adapter may set them after construction.
        self._shadows = Shadows(
            self.registry,
            self.shadow_alias,
            self.shadow_queue,
            load=self._load,
            scored=lambda scored: self.hooks.shadowed(scored),
            dropped=lambda name, rows: self.hooks.shadow_dropped(name, rows),
            load_failed=lambda name, error: self.hooks.load_failed(name, error),
            refused=self._refused,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, refs: Sequence[str] = ()) -> None:
        """Load these models now and start following alias moves."""
        for ref in refs:
            await self.model(ref)
        if self._poller is None:
            loop = asyncio.get_running_loop()
            if self.shadow_alias is not None:
                try:
                    await self._follow_shadows()
                except Exception:  # the poller tries again; serving must start regardless
                    logger.exception("could not look for shadows")
                self._shadows.start()
            self._poller = loop.create_task(self._follow_aliases())

    async def close(self) -> None:
        """Stop following aliases and drain every batcher."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await self._shadows.close()
        await asyncio.gather(*(m.batcher.close() for m in self._models.values()))
        await asyncio.gather(*self._retiring, return_exceptions=True)
        self._models.clear()
        self._routes.clear()

    # -- resolving and loading --------------------------------------------------------------

    def parse(self, ref: str) -> ModelRef:
        """A served reference: a bare name means the default alias."""
        parsed = ModelRef.parse(ref)
        if parsed.version is None and parsed.alias is None:
            return ModelRef(parsed.name, None, self.default_alias)
        return parsed

    def route_key(self, ref: str) -> str:
        """The canonical text of a served reference (``fraud`` → ``fraud@production``)."""
        route = self._canonical.get(ref)
        if route is None:
            parsed = self.parse(ref)
            if parsed.version is not None:
                route = f"{parsed.name}:{parsed.version}"
            else:
                route = f"{parsed.name}@{parsed.alias}"
            if len(self._canonical) < 10_000:  # bounded: refs come from request URLs
                self._canonical[ref] = route
        return route

    def loaded(self, ref: str) -> LoadedModel | None:
        """The model a reference is served by now, if it is loaded; never touches the DB."""
        key = self._routes.get(self.route_key(ref))
        return self._models.get(key) if key is not None else None

    async def model(self, ref: str) -> LoadedModel:
        """The loaded model for a reference, resolving and loading it on first use."""
        found = self.loaded(ref)
        if found is not None:
            return found
        route = self.route_key(ref)
        lock = self._locks.setdefault(route, asyncio.Lock())
        async with lock:
            key = self._routes.get(route)
            if key is None or key not in self._models:
                try:
                    info = await asyncio.to_thread(self.registry.get_version, self.parse(route))
                    await self._ensure_loaded(info)
                except BaseException:
                    # Refs come from request URLs: keep no lock for one that never loaded.
                    if route not in self._routes and self._locks.get(route) is lock:
                        del self._locks[route]
                    raise
                key = (info.name, info.version)
                self._routes[route] = key
            return self._models[key]

    async def _ensure_loaded(self, info: ModelVersionInfo) -> LoadedModel:
        key = (info.name, info.version)
        if key in self._models:
            return self._models[key]
        promoted = self._shadows.predictor(info.name, info.version)
        if promoted is not None:
            # The shadow promoted: its predictor was loaded and verified already (versions
            # never change), so production takes it over rather than loading it again.
            predictor = promoted
        else:
            try:
                predictor = await asyncio.to_thread(self._load, info)
            except ShipyardError as error:
                self.hooks.load_failed(info.name, error)
                raise
        if key in self._models:  # loaded meanwhile through another ref or by refresh
            return self._models[key]
        layout = FeatureLayout(info.input_schema)
        loaded = LoadedModel(
            info=info,
            predictor=predictor,
            layout=layout,
            batcher=Batcher(
                predictor.predict,
                max_batch_size=self.max_batch_size,
                max_batch_delay_ms=self.max_batch_delay_ms,
                predict_in_thread=self.predict_in_thread,
                observer=self.hooks.observer(info.name, info.version),
                answered=self._batch_answered(info, layout),
            ),
        )
        self._models[key] = loaded
        logger.info("loaded %s", info.ref)
        return loaded

    def _batch_answered(self, info: ModelVersionInfo, layout: FeatureLayout) -> BatchAnswered:
        """The batcher's ``answered``: one ``ScoredRows`` of the batch's requests with ids,
        for ``hooks.answered`` and the shadow."""

        def answered(
            features: Features, outputs: Outputs, notes: Sequence[tuple[Any, int, int]]
        ) -> None:
            if self.hooks.answered is None and self.shadowing(info.name) is None:
                return
            now = time.perf_counter()
            counts = [stop - start for _, start, stop in notes]
            if sum(counts) != len(features):  # some requests had no ids, or went
                rows = np.concatenate([np.arange(start, stop) for _, start, stop in notes])
                features = features[rows]
                outputs = {name: values[rows] for name, values in outputs.items()}
            ids = list(itertools.chain.from_iterable(asked.ids for asked, _, _ in notes))
            waited = np.array([now - asked.started for asked, _, _ in notes], np.float32)
            latency = np.repeat(waited * np.float32(1000), counts)
            if self.hooks.answered is not None:  # first: the log matters more than the shadow
                self.hooks.answered(
                    ScoredRows(
                        info.name, info.version, ids, layout.names, features, outputs, latency
                    )
                )
            self.shadow(info.name, info.version, ids, layout.names, features)

        return answered

    def _load(self, info: ModelVersionInfo) -> Predictor:
        artifact = self.registry.load_artifact(ModelRef(info.name, info.version, None))
        return load_predictor(artifact)

    # -- inference --------------------------------------------------------------------------

    async def infer(
        self,
        ref: str,
        decode: Callable[[FeatureLayout], Decoded],
        ids: Callable[[int], Sequence[str]] | None = None,
        started: float | None = None,
    ) -> Inference[Decoded]:
        """Decode a request for the version ``ref`` names now and predict with that version.

        ``decode`` turns the request into checked rows in the given layout's feature order
        (``layout.from_records(...)``, ``layout.check(matrix)``, ...), or into an object with
        such ``features``; it raises ``InvalidInputError`` for a request it cannot read. A
        decoded request of no rows (a stream batch whose messages were all refused) is not
        predicted: its outputs are empty.

        ``ids`` gives the rows' prediction ids from their number (it may refuse the
        request, before anything is predicted, with ``InvalidInputError``); the answered
        rows then reach ``hooks.answered`` and the shadow with them, each with its latency
        since ``started`` (a ``time.perf_counter()``; default: now).
        """
        note: _Asked | None = None
        for _ in range(3):
            loaded = await self.model(ref)
            decoded = decode(loaded.layout)
            features = decoded if isinstance(decoded, np.ndarray) else decoded.features
            if ids is not None and note is None:  # a redecoded request has as many rows
                given = ids(len(features))
                if len(given) != len(features):  # the adapter's mistake: it would spoil a batch
                    raise ValueError(f"{len(given)} ids made for {len(features)} rows")
                note = _Asked(given, time.perf_counter() if started is None else started)
            try:
                outputs = await loaded.batcher.submit(features, note) if len(features) else {}
            except BatcherClosedError:
                continue  # swapped between lookup and submit: decode for the new version
            info = loaded.info
            classes = info.output_schema.get("classes", ())
            return Inference(
                info.name,
                info.version,
                outputs,
                loaded.layout,
                decoded,
                classes,
                () if note is None else note.ids,
            )
        raise BatcherClosedError(f"{ref} kept changing version; retry")

    # -- shadow scoring ---------------------------------------------------------------------

    def shadow(
        self,
        model: str,
        version: int,
        ids: Sequence[str],
        names: Sequence[str],
        features: Features,
    ) -> bool:
        """Have the model's version in shadow score rows ``version`` answered, later and
        off the response path (``hooks.shadowed`` gets them); never waits. False when there
        is no shadow to score them (none, or it is the answering version) or they were
        dropped: the shadow's queue was full, or it lacks a feature they have not."""
        return self._shadows.offer(model, version, ids, names, features)

    def shadowing(self, model: str) -> int | None:
        """The version of ``model`` scoring in shadow, if one is loaded."""
        return self._shadows.version(model)

    @property
    def shadow_dropped(self) -> int:
        """Rows the shadows did not score (their queue was full, they failed)."""
        return self._shadows.dropped_rows

    async def _follow_shadows(self) -> None:
        names = {route.partition("@")[0].partition(":")[0] for route in self._routes}
        await self._shadows.follow(names, self._served_predictor)

    def _served_predictor(self, key: VersionKey) -> Predictor | None:
        served = self._models.get(key)
        return served.predictor if served is not None else None

    # -- following aliases ------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-resolve every served alias once; swap those that moved. Then follow the
        shadows."""
        for route, current in list(self._routes.items()):
            if "@" not in route:
                continue  # name:version never moves
            try:
                info = await asyncio.to_thread(self.registry.get_version, self.parse(route))
            except ShipyardError as error:
                logger.warning("cannot re-resolve %s (%s); still serving %s", route, error, current)
                continue
            new = (info.name, info.version)
            if new == current or new in self._refused:
                continue
            try:
                await self._ensure_loaded(info)
            except ShipyardError as error:  # tampered, unsigned, untrusted types, unreadable
                # Versions never change, so one refusal (one log line, one metric) is enough.
                self._refused.add(new)
                logger.error("refusing %s (%s); still serving %s", info.ref, error, current)
                continue
            if self._routes.get(route) != current:
                continue  # a concurrent refresh already moved this route
            self._routes[route] = new
            self.hooks.swapped(route, current[1], info.version)
            logger.info("%s now serves %s (was v%d)", route, info.ref, current[1])
            self._retire_if_unused(current)
        await self._follow_shadows()

    def _retire_if_unused(self, key: VersionKey) -> None:
        if key in self._routes.values():
            return
        old = self._models.pop(key, None)
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.batcher.close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _follow_aliases(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # the follower must survive anything; it is retried
                logger.exception("alias refresh failed")

    @property
    def models(self) -> list[LoadedModel]:
        """Every loaded version."""
        return list(self._models.values())

"""Shadow scoring: the version behind a served model's ``shadow`` alias scores answered rows.

A retrained candidate (``retrain.gate.shadow``) is loaded beside the version that answers.
``Shadows.offer`` queues answered rows with their ids (bounded: dropped and counted when the
shadow falls behind) for a task that scores them with it in a thread — what queued
meanwhile stacked into one call — and hands the outputs on (``scored``: the adapters log
them under the shadow's version with the same ids). The answer never waits for the
shadow, nor fails with it: a failing shadow is logged once, its rows counted. ``follow``
keeps the shadows in step with the alias: moved, the old version stops at once and the new
one is loaded; gone, the shadow is dropped. ``InferenceService`` owns one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shipyard.errors import AliasNotFoundError, ShipyardError
from shipyard.inference.inputs import FeatureLayout
from shipyard.inference.predictor import Features, Predictor, ScoredRows
from shipyard.registry import ModelRef, ModelVersionInfo, Registry

logger = logging.getLogger(__name__)

VersionKey = tuple[str, int]

#: Rows a shadow scores in one call at most (queued requests are stacked up to this).
SHADOW_BATCH_ROWS = 1024


@dataclass
class _Shadow:
    info: ModelVersionInfo
    predictor: Predictor
    layout: FeatureLayout


_Work = tuple[_Shadow, Sequence[str], Features]


class Shadows:
    """The loaded shadow of each served model, its queue and the task that scores it."""

    def __init__(
        self,
        registry: Registry,
        alias: str | None,
        queue: int,
        *,
        load: Callable[[ModelVersionInfo], Predictor],
        scored: Callable[[ScoredRows], None],
        dropped: Callable[[str, int], None],
        load_failed: Callable[[str, ShipyardError], None],
        refused: set[VersionKey],
    ) -> None:
        self.registry = registry
        self.alias = alias
        self.queue = queue
        self._load = load
        self._scored = scored
        self._told_dropped = dropped
        self._load_failed = load_failed
        self._refused = refused
        """Versions refused once (tampered, untrusted): shared with the service."""
        self.dropped_rows = 0
        self._shadows: dict[str, _Shadow] = {}
        self._failed: set[VersionKey] = set()
        self._work: asyncio.Queue[_Work] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start scoring what is offered (on the running loop)."""
        if self._task is None:
            self._work = asyncio.Queue(self.queue)
            self._task = asyncio.get_running_loop().create_task(self._score_all(self._work))

    async def close(self) -> None:
        """Stop scoring; drop every shadow."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = self._work = None
        self._shadows.clear()

    def offer(
        self,
        model: str,
        version: int,
        ids: Sequence[str],
        names: Sequence[str],
        features: Features,
    ) -> bool:
        """Queue rows ``version`` answered for the model's shadow; False when there is none
        to score them (none, or it is the answering version) or they were dropped."""
        shadow = self._shadows.get(model)
        work = self._work
        if shadow is None or work is None or shadow.info.version == version or not len(ids):
            return False
        wanted = shadow.layout.names
        if list(names) != list(wanted):  # the shadow may order its features otherwise
            position = {name: i for i, name in enumerate(names)}
            if any(name not in position for name in wanted):
                return self._dropped(model, len(ids))
            features = features[:, [position[name] for name in wanted]]
        try:
            work.put_nowait((shadow, ids, features))
        except asyncio.QueueFull:
            return self._dropped(model, len(ids))
        return True

    def version(self, model: str) -> int | None:
        """The version of ``model`` scoring in shadow, if one is loaded."""
        shadow = self._shadows.get(model)
        return shadow.info.version if shadow is not None else None

    def predictor(self, model: str, version: int) -> Predictor | None:
        """The loaded predictor of this version if it is the model's shadow (a promotion
        takes it over rather than loading it again: versions never change)."""
        shadow = self._shadows.get(model)
        return shadow.predictor if shadow is not None and shadow.info.version == version else None

    def _dropped(self, model: str, rows: int) -> bool:
        self.dropped_rows += rows
        self._told_dropped(model, rows)
        return False

    async def _score_all(self, work: asyncio.Queue[_Work]) -> None:
        # In a thread: the shadow must never hold the event loop that answers requests.
        # What queued meanwhile is scored in one call per shadow (up to SHADOW_BATCH_ROWS
        # rows), so a shadow keeps up with many small requests; when it still falls
        # behind, ``offer`` drops what does not fit.
        while True:
            items = [await work.get()]
            rows = len(items[0][1])
            while rows < SHADOW_BATCH_ROWS and not work.empty():
                items.append(work.get_nowait())
                rows += len(items[-1][1])
            groups: dict[int, list[_Work]] = {}
            for item in items:
                groups.setdefault(id(item[0]), []).append(item)
            for group in groups.values():
                await self._score(group)

    async def _score(self, group: list[_Work]) -> None:
        """Score the queued rows of one shadow in one call and hand them on."""
        shadow = group[0][0]
        ids = [i for _, item_ids, _ in group for i in item_ids]
        features = group[0][2] if len(group) == 1 else np.concatenate([f for *_, f in group])
        started = time.perf_counter()
        try:
            outputs = await asyncio.to_thread(shadow.predictor.predict, features)
            latency_ms = (time.perf_counter() - started) * 1000
            self._scored(
                ScoredRows(
                    shadow.info.name,
                    shadow.info.version,
                    ids,
                    shadow.layout.names,
                    features,
                    outputs,
                    latency_ms,
                )
            )
        except Exception:  # a failing shadow must not stop the next request's
            key = (shadow.info.name, shadow.info.version)
            if key not in self._failed:  # told once; the drops are counted
                self._failed.add(key)
                logger.exception("shadow %s failed on %d rows", shadow.info.ref, len(ids))
            self._dropped(shadow.info.name, len(ids))

    async def follow(
        self, names: Iterable[str], served: Callable[[VersionKey], Predictor | None]
    ) -> None:
        """Load the version behind the shadow alias of each of these served models (taking
        the ``served`` predictor of a version already loaded); unload one whose alias moved
        away or went."""
        alias = self.alias
        if alias is None:
            return
        for name in set(names) | set(self._shadows):
            try:
                info = await asyncio.to_thread(
                    self.registry.get_version, ModelRef(name, None, alias)
                )
            except AliasNotFoundError:
                if self._shadows.pop(name, None) is not None:
                    logger.info("%s has no shadow any more", name)
                continue
            except ShipyardError as error:
                logger.warning("cannot resolve %s@%s (%s)", name, alias, error)
                continue
            current = self._shadows.get(name)
            key = (info.name, info.version)
            if current is not None and current.info.version == info.version:
                continue
            if current is not None:  # moved: the old version stops now, loaded or not
                del self._shadows[name]
                logger.info("%s no longer scores %s requests in shadow", current.info.ref, name)
            if key in self._refused:
                continue
            predictor = served(key)
            try:
                if predictor is None:
                    predictor = await asyncio.to_thread(self._load, info)
            except ShipyardError as error:
                self._refused.add(key)
                self._load_failed(name, error)
                logger.error("refusing %s as a shadow (%s)", info.ref, error)
                continue
            self._shadows[name] = _Shadow(info, predictor, FeatureLayout(info.input_schema))
            logger.info("%s scores %s requests in shadow", info.ref, name)

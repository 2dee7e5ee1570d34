"""Retraining on evidence: the labelled production rows → a pipeline run → the gate → promotion.

``PipelineRetrainer.retrain(model, trigger)`` is the one path the monitor and ``shipyard
retrain NAME`` take:

1. the production version's ``retrain:`` rules (none: skipped); its retrain lock, taken for
   a new attempt (refused while one is in flight or the cooldown runs); an attempt that
   died holding it (SIGKILL) is **abandoned** first — its run marked failed, a candidate it
   registered left unpromoted (or, if its promotion had landed, recorded as such) — and
   this attempt then retrains afresh for the trigger;
2. the labelled rows (``pipeline/labelled.py``): the newest ``gate.holdout`` share is held
   out for the gate, the rest (plus ``data.original`` of the current version's training
   rows) is written under ``home/retrain/MODEL/`` and trained on by the production
   version's own spec (from its run), which registers and signs the candidate in one
   transaction but never promotes it;
3. the gate: the candidate and the production version score the same held-out rows; the
   candidate is promoted only when it beats production by ``gate.min_delta``, through the
   lock (``RetrainLocks.promote``: only while this attempt holds it, and only if the alias
   still points at the version it was judged against). With ``gate.shadow: N`` a winner is
   not promoted yet: it gets the shadow alias (``retrain.shadowing``), servers and scorers
   score live requests with it beside production, and ``follow_shadow`` judges it again on
   its first N labelled live predictions (``pipeline/shadowing.py``); no retrain of the
   model starts meanwhile.

Each decision is an event (``record_event``: in the registry database, published on
``<model>.events`` by the monitor), with a key that cannot repeat: ``retrain.triggered``,
``retrain.abandoned``, ``retrain.trained``, ``retrain.failed``, ``retrain.gated`` (keyed
by attempt), ``retrain.skipped`` (keyed by the trigger and, for a refusal that waits — the
cooldown, one in flight, too few labelled rows, one class in the gate's rows — its cause, so
a trigger asked again every cycle is told once) and ``model.promoted`` (keyed by the candidate
version, so a restarted monitor never records — or makes — a promotion twice).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shipyard.errors import AliasNotFoundError, ConflictError, NotFoundError, ShipyardError
from shipyard.monitoring.retraining import (
    ATTEMPT_TAG,
    DEGRADED,
    DRIFT,
    MANUAL,
    RetrainOutcome,
    RetrainSpec,
    Status,
    Trigger,
)
from shipyard.pipeline.ensemble import ClusterOptions
from shipyard.pipeline.gate import as_json, judge
from shipyard.pipeline.labelled import (
    TIME,
    drop_copies,
    labelled_rows,
    micros,
    original_sample,
    span,
    split_holdout,
)
from shipyard.pipeline.recovery import ABANDONMENT, retrain_actor
from shipyard.pipeline.runner import Runner, StageListener
from shipyard.pipeline.shadowing import follow_shadow
from shipyard.pipeline.spec import Spec, parse_spec
from shipyard.registry import DEFAULT_ALIAS, ModelRef

if TYPE_CHECKING:
    from shipyard.monitoring.records import PredictionLog
    from shipyard.registry import (
        EventRecord,
        ModelVersionInfo,
        Registry,
        RunInfo,
    )
    from shipyard.settings import Settings

logger = logging.getLogger(__name__)


class PipelineRetrainer:
    """Retrains models with their production version's spec (a ``monitoring.Retrainer``)."""

    def __init__(
        self,
        registry: Registry,
        log: PredictionLog,
        settings: Settings,
        *,
        owner: str,
        listener: StageListener | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry = registry
        self.log = log
        self.settings = settings
        self.owner = owner
        self.listener = listener
        self.clock = clock
        self.ttl = settings.retrain_lock_ttl_seconds

    def retrain(self, model: str, trigger: Trigger, *, force: bool = False) -> RetrainOutcome:
        """Retrain ``model`` for ``trigger`` (``force``: without waiting for the cooldown;
        never past a retrain in flight). Failures are outcomes, not exceptions — but for
        an unknown model or an unreachable database."""
        events: list[EventRecord] = []
        production = self._production(model)
        if production is None:
            return self._skip(
                model, trigger, "skipped", f"{model} has no production version", events
            )
        try:
            rules = RetrainSpec.from_tags(production.tags)
        except ShipyardError as error:
            return self._skip(model, trigger, "skipped", str(error), events)
        if rules is None:
            reason = f"the spec of {production.ref} has no retrain: section"
            return self._skip(model, trigger, "skipped", reason, events)
        if trigger.kind == MANUAL and not rules.triggers.manual:
            reason = f"the spec of {production.ref} turns manual retrains off"
            return self._skip(model, trigger, "skipped", reason, events)
        attempt = uuid.uuid4().hex
        locks = self.registry.retraining
        begun = locks.begin(
            model,
            attempt=attempt,
            owner=self.owner,
            trigger=trigger.key,
            ttl_seconds=self.ttl,
            cooldown_seconds=None if force else rules.cooldown,
            abandon=ABANDONMENT,
        )
        if begun.attempt is None:
            blocking = begun.blocking
            if begun.shadow is not None:
                reason = (
                    f"{model}:{begun.shadow} is in shadow: no retrain starts until it is judged "
                    "(one retrain in flight)"
                )
            elif begun.until is not None:
                assert blocking is not None
                reason = (
                    f"cooldown: the last retrain ended at {blocking.cooled_at:%H:%M:%S}, the "
                    f"next may start at {begun.until:%H:%M:%S} UTC"
                )
            else:
                assert blocking is not None
                reason = (
                    f"in flight: attempt {blocking.attempt} of {blocking.owner}, started "
                    f"{blocking.started_at:%H:%M:%S} UTC"
                )
            return self._skip(model, trigger, "waiting", reason, events, suffix=begun.refused)
        for event in begun.abandoned:  # recorded with the takeover (``pipeline/recovery.py``)
            events.append(event)
            logger.info("%s v%s: %s %s", model, event.version, event.kind, event.key)
        with locks.holding(model, attempt, self.ttl) as held:
            try:
                status, reason, candidate = self._attempt(model, trigger, attempt, events)
            except Exception as error:  # any failure is the attempt's, told in an event
                logger.exception("retrain attempt %s of %s failed", attempt, model)
                status, reason, candidate = "failed", f"{type(error).__name__}: {error}", None
                self._record(model, None, "retrain.failed", attempt, {"reason": reason}, events)
            if held.lost:
                reason += " (the lock was lost meanwhile)"
        # A shadow's attempt was finished as it opened (``RetrainLocks.open_shadow``); its
        # cooldown starts once it is judged (``close_shadow``).
        locks.finish(model, attempt, status, cool=status in ("promoted", "lost", "failed"))
        return RetrainOutcome(model, status, reason, candidate, events)

    # -- one attempt ------------------------------------------------------------------------

    def _attempt(
        self, model: str, trigger: Trigger, attempt: str, events: list[EventRecord]
    ) -> tuple[Status, str, int | None]:
        production = self._production(model)
        if production is None:
            raise NotFoundError(f"{model} lost its production version")
        if (
            trigger.version is not None
            and trigger.version != production.version
            and trigger.kind != MANUAL
        ):
            reason = (
                f"superseded: the evidence is about v{trigger.version}, production is "
                f"{production.ref} now"
            )
            self._record(
                model,
                None,
                "retrain.skipped",
                trigger.key,
                {"reason": reason, "trigger": trigger.document()},
                events,
            )
            return "skipped", reason, None
        rules = RetrainSpec.from_tags(production.tags)
        assert rules is not None
        spec, spec_text, run = self._spec(production)
        schema = spec.data.table_schema()
        labelled = labelled_rows(self.registry, self.log, model, schema, rules.data, self.clock())
        frame = labelled.frame
        if len(frame) < rules.data.min_rows:
            reason = (
                f"too few rows: {len(frame):,} labelled predictions, data.min_rows is "
                f"{rules.data.min_rows:,}"
            )
            evidence = {
                "reason": reason,
                "trigger": trigger.document(),
                "labelled": span(frame),
                "labels": labelled.labels,
            }
            # Waiting, not skipped: labels keep coming, so the same trigger is asked again
            # (its evidence stays unconsumed); the event is keyed by it, so told once.
            key = f"{trigger.key}:too-few-rows"
            self._record(model, None, "retrain.skipped", key, evidence, events)
            return "waiting", reason, None
        waiting = self._before_trigger(model, trigger, rules.data.after_trigger, frame, events)
        if waiting is not None:
            return "waiting", waiting, None
        train, holdout, overlap = split_holdout(frame, rules.gate.holdout, schema.feature_names)
        target = schema.target
        assert target is not None
        if spec.task == "classification" and holdout[target].nunique() < 2:
            reason = f"the gate's {len(holdout):,} newest labelled rows hold one class only"
            evidence = {"reason": reason, "trigger": trigger.document(), "holdout": span(holdout)}
            key = f"{trigger.key}:one-class"
            self._record(model, None, "retrain.skipped", key, evidence, events)
            return "waiting", reason, None
        self._record(
            model,
            production.version,
            "retrain.triggered",
            attempt,
            {
                "attempt": attempt,
                "owner": self.owner,
                "trigger": trigger.document(),
                "evidence": trigger.evidence,
                "production": production.version,
                "labelled": span(frame),
                "rules": rules.model_dump(mode="json", by_alias=True),
            },
            events,
        )
        original, found = original_sample(
            run, schema, rules.data.original, seed=spec.split.random_state
        )
        original_copies = 0
        if original is not None:
            original, original_copies = drop_copies(original, holdout, schema.feature_names)
        parts = [train.drop(columns=[TIME])] + ([original] if original is not None else [])
        table = pd.concat(parts, ignore_index=True)
        path = self._data_file(model, attempt, table)
        never = spec.promotion.model_copy(update={"require": "never"})
        cluster = ClusterOptions(self.settings.scheduler, self.settings.cluster_workers)
        result = Runner(self.registry, listener=self.listener, cluster=cluster).run(
            spec.with_data_file(path).model_copy(update={"promotion": never}),
            spec_text,
            tags={
                ATTEMPT_TAG: attempt,
                "retrained_from": str(production.version),
                "trigger": trigger.key,
            },
            on_start=lambda run_id: self.registry.retraining.progress(
                model, attempt, run_id=run_id
            ),
        )
        candidate = result.version
        self.registry.retraining.progress(model, attempt, candidate=candidate.version)
        self._record(
            model,
            candidate.version,
            "retrain.trained",
            attempt,
            {
                "attempt": attempt,
                "run_id": result.run_id,
                "candidate": candidate.version,
                "data_file": str(path),
                "rows": {
                    "labelled": len(frame),
                    "train": len(train),
                    "original": 0 if original is None else len(original),
                    "holdout": len(holdout),
                    "dropped_as_holdout_copies": overlap,
                    "original_dropped_as_holdout_copies": original_copies,
                },
                "original": found,
                "labelled": span(frame),
                "offline": result.metrics,
            },
            events,
        )
        return self._gate(model, spec, rules, attempt, production, candidate, holdout, events)

    def _gate(
        self,
        model: str,
        spec: Spec,
        rules: RetrainSpec,
        attempt: str,
        production: ModelVersionInfo,
        candidate: ModelVersionInfo,
        holdout: pd.DataFrame,
        events: list[EventRecord],
    ) -> tuple[Status, str, int | None]:
        verdict = judge(self.registry, spec, rules.gate, production, candidate, holdout)
        self._record(model, candidate.version, "retrain.gated", attempt, verdict.evidence, events)
        if not verdict.won:
            return "lost", f"{candidate.ref} lost the gate: {verdict.comparison}", candidate.version
        if rules.gate.shadow is not None:
            return self._open_shadow(model, rules, attempt, production, candidate, events)
        alias = DEFAULT_ALIAS  # the spec may name no other (``pipeline/spec.py``)
        try:
            self.registry.retraining.promote(
                model,
                attempt,
                candidate.version,
                alias,
                expected=production.version,
                actor=retrain_actor(attempt),
            )
        except ConflictError as error:
            reason = f"{candidate.ref} won the gate but was not promoted: {error}"
            self._record(
                model, candidate.version, "retrain.failed", attempt, {"reason": reason}, events
            )
            return "failed", reason, candidate.version
        evidence = {
            "alias": alias,
            "from": production.version,
            "to": candidate.version,
            "attempt": attempt,
            "gate": verdict.comparison,
        }
        self._record(
            model,
            candidate.version,
            "model.promoted",
            f"v{candidate.version}",
            evidence,
            events,
        )
        reason = f"{candidate.ref} promoted to {alias}: {verdict.comparison}"
        return "promoted", reason, candidate.version

    def _open_shadow(
        self,
        model: str,
        rules: RetrainSpec,
        attempt: str,
        production: ModelVersionInfo,
        candidate: ModelVersionInfo,
        events: list[EventRecord],
    ) -> tuple[Status, str, int | None]:
        """Point the shadow alias at a candidate that won the hold-out, instead of
        promoting it: servers score live requests with it too, and ``follow_shadow``
        judges it on them."""
        needed = rules.gate.shadow
        assert needed is not None
        deadline = self.clock() + timedelta(seconds=rules.gate.shadow_timeout)
        evidence = {
            "attempt": attempt,
            "candidate": candidate.version,
            "production": production.version,
            "labelled": needed,
            "deadline": deadline.isoformat(),
            "metric": rules.gate.metric,
            "min_delta": rules.gate.min_delta,
        }
        kind = "retrain.shadowing"
        try:
            opened = self.registry.retraining.open_shadow(
                model,
                attempt,
                candidate.version,
                actor=retrain_actor(attempt),
                event=(candidate.version, kind, f"{kind}:{attempt}", as_json(evidence)),
            )
        except ConflictError as error:
            reason = f"{candidate.ref} won the hold-out but could not go into shadow: {error}"
            self._record(
                model, candidate.version, "retrain.failed", attempt, {"reason": reason}, events
            )
            return "failed", reason, candidate.version
        events.append(opened)
        reason = (
            f"{candidate.ref} won the hold-out; it scores live requests in shadow until "
            f"{needed:,} of them are labelled (by {deadline:%Y-%m-%d %H:%M:%S} UTC)"
        )
        return "shadowing", reason, candidate.version

    def follow_shadow(self, model: str) -> RetrainOutcome | None:
        """Judge the model's candidate in shadow when it can be (``pipeline/shadowing.py``)."""
        return follow_shadow(self.registry, self.log, model, self.clock())

    # -- pieces -----------------------------------------------------------------------------

    def _production(self, model: str) -> ModelVersionInfo | None:
        try:
            return self.registry.get_version(ModelRef(model, None, DEFAULT_ALIAS))
        except AliasNotFoundError:
            return None

    def _before_trigger(
        self,
        model: str,
        trigger: Trigger,
        needed: int,
        frame: pd.DataFrame,
        events: list[EventRecord],
    ) -> str | None:
        """Why the retrain waits (``data.after_trigger``): too few of its labelled rows were
        predicted after the drift or degradation was seen; None when it may go on."""
        if not needed or trigger.at is None or trigger.kind not in (DRIFT, DEGRADED):
            return None
        after = int((frame[TIME] >= micros(trigger.at)).sum())
        if after >= needed:
            return None
        reason = (
            f"too few rows after the trigger: {after:,} labelled predictions made since "
            f"{trigger.at:%H:%M:%S} UTC ({trigger.kind}), data.after_trigger is {needed:,}"
        )
        evidence = {"reason": reason, "trigger": trigger.document(), "after": after}
        # Waiting, keyed by the trigger: told once, asked again each pass as labels come.
        key = f"{trigger.key}:too-few-after"
        self._record(model, None, "retrain.skipped", key, evidence, events)
        return reason

    def _spec(self, production: ModelVersionInfo) -> tuple[Spec, str, RunInfo]:
        """The spec that trained the production version (from its run), and the run."""
        if production.run_id is None:
            raise NotFoundError(
                f"{production.ref} was registered without a pipeline run, so there is no spec "
                "to retrain it with; register it with `shipyard pipeline run`"
            )
        run = self.registry.get_run(production.run_id)
        text = self.registry.runs.spec_text(run.id)
        spec = parse_spec(text, source=f"the spec of run {run.id}", data_file=Path("labelled.csv"))
        return spec, text, run

    def _data_file(self, model: str, attempt: str, table: pd.DataFrame) -> Path:
        """Where the training table of an attempt is kept (the run's lineage points there)."""
        folder = self.settings.home / "retrain" / model
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{attempt}.parquet"
        partial = folder / f".{attempt}.parquet"
        table.to_parquet(partial, index=False)
        partial.replace(path)
        return path

    def _skip(
        self,
        model: str,
        trigger: Trigger,
        status: Status,
        reason: str,
        events: list[EventRecord],
        *,
        suffix: str | None = None,
    ) -> RetrainOutcome:
        key = f"{trigger.key}:{suffix}" if suffix else trigger.key
        evidence = {"reason": reason, "trigger": trigger.document()}
        self._record(model, None, "retrain.skipped", key, evidence, events)
        return RetrainOutcome(model, status, reason, None, events)

    def _record(
        self,
        model: str,
        version: int | None,
        kind: str,
        key: str,
        evidence: Mapping[str, Any],
        events: list[EventRecord],
    ) -> None:
        event = self.registry.monitoring.record_event(
            model, version, kind, f"{kind}:{key}", as_json(evidence)
        )
        if event is not None:
            events.append(event)
            logger.info("%s v%s: %s %s", model, version, kind, key)

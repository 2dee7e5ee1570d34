"""Runs a spec's stages in-process and records the run, each stage's status and timing."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard import __version__
from shipyard.pipeline.ensemble import ClusterOptions, LearnerListener
from shipyard.pipeline.spec import Spec
from shipyard.pipeline.stages import STAGES, Promotion, RunContext, Stage
from shipyard.registry import ModelVersionInfo, Registry

StageListener = Callable[[str, str, float], None]
"""Called with (stage name, "running" | "succeeded" | "failed", seconds so far)."""


@dataclass(frozen=True)
class StageTiming:
    """How one stage ended and how long it took."""

    name: str
    status: str
    duration_s: float


@dataclass(frozen=True)
class RunResult:
    """What a successful run produced."""

    run_id: str
    rows: int
    dataset_sha256: str
    metrics: dict[str, float]
    version: ModelVersionInfo
    promotion: Promotion
    stages: list[StageTiming]


class Runner:
    """Executes stages in order; a failing stage fails the run and is recorded as such."""

    def __init__(
        self,
        registry: Registry,
        *,
        stages: Sequence[type[Stage]] = STAGES,
        listener: StageListener | None = None,
        cluster: ClusterOptions | None = None,
        learner_listener: LearnerListener | None = None,
    ) -> None:
        self.registry = registry
        self.stages = stages
        self.listener = listener
        self.cluster = cluster or ClusterOptions()
        self.learner_listener = learner_listener

    def run(
        self,
        spec: Spec,
        spec_text: str,
        *,
        tags: Mapping[str, str] | None = None,
        on_start: Callable[[str], None] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Execute the spec; raises the failing stage's error after recording it.

        ``tags`` go on the registered version beside the spec's; ``on_start`` is called
        with the run's id once the run is recorded, before the first stage. ``run_id``
        names a queued or failed run to carry on instead of recording a new one."""
        params = run_params(spec)
        if spec.ensemble is not None:
            # Which cluster fitted the learners; the train stage replaces it by what it
            # found there (``N workers at ADDRESS``).
            params["cluster"] = self.cluster.scheduler or f"local ({self.cluster.workers} workers)"
        if run_id is None:
            run_id = self.registry.runs.start(spec.name, spec_text, params)
        else:
            self.registry.runs.reopen(run_id)
            # What this attempt runs with (the data file given now, the ensemble, the
            # cluster) replaces what the queued or failed attempt recorded.
            self.registry.runs.update_params(run_id, params)
        ctx = RunContext(
            spec=spec,
            registry=self.registry,
            run_id=run_id,
            tags=dict(tags or {}),
            cluster=self.cluster,
            learner_listener=self.learner_listener,
        )
        if on_start is not None:
            on_start(run_id)
        timings: list[StageTiming] = []
        for stage_cls in self.stages:
            stage = stage_cls()
            started_at = datetime.now(UTC)
            start = time.perf_counter()
            self._tell(stage.name, "running", 0.0)
            try:
                stage.run(ctx)
            except BaseException as error:
                duration = time.perf_counter() - start
                message = f"{type(error).__name__}: {error}"
                self.registry.runs.record_stage(
                    run_id, stage.name, "failed", started_at, duration, message
                )
                self.registry.runs.finish(run_id, "failed", f"{stage.name}: {message}")
                self._tell(stage.name, "failed", duration)
                raise
            duration = time.perf_counter() - start
            self.registry.runs.record_stage(run_id, stage.name, "succeeded", started_at, duration)
            if ctx.dataset_sha256 is not None and stage.name == "ingest":
                self.registry.runs.set_dataset(run_id, ctx.dataset_sha256)
            timings.append(StageTiming(stage.name, "succeeded", duration))
            self._tell(stage.name, "succeeded", duration)
        self.registry.runs.finish(run_id, "succeeded")
        assert ctx.version is not None
        assert ctx.promotion is not None
        assert ctx.frame is not None
        return RunResult(
            run_id=run_id,
            rows=len(ctx.frame),
            dataset_sha256=ctx.dataset_sha256 or "",
            metrics=ctx.metrics,
            version=ctx.version,
            promotion=ctx.promotion,
            stages=timings,
        )

    def _tell(self, name: str, status: str, seconds: float) -> None:
        if self.listener is not None:
            self.listener(name, status, seconds)


def run_params(spec: Spec) -> dict[str, Any]:
    """What a run of ``spec`` records as its params: the estimator and its parameters, the
    split, where the data came from and the ensemble (a queued run records the same)."""
    params: dict[str, Any] = {
        "task": spec.task,
        "model": spec.model.type,
        "params": spec.model.params,
        "scale": spec.model.scale,
        "split": spec.split.model_dump(),
        "data": data_source(spec),
        "shipyard": __version__,
    }
    if spec.ensemble is not None:
        params["ensemble"] = spec.ensemble.model_dump()
    return params


def data_source(spec: Spec) -> dict[str, object]:
    """Where a run's table came from, kept in its params so that a retrain can find the
    training data of the version it replaces: ``{"path": absolute}`` or ``{"generate": …}``."""
    if spec.data.path is not None:
        return {"path": str(spec.data.path.absolute())}
    if spec.data.images is not None:
        images = spec.data.images.relative_to(Path.cwd())
        return {"images": images.model_dump(mode="json", exclude_unset=True)}
    assert spec.data.generate is not None
    return {"generate": spec.data.generate.model_dump()}

"""What the registry hands out: plain frozen records, detached from any database session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class ModelInfo:
    """A model: its latest version number, where its aliases point, how many versions it has."""

    name: str
    description: str | None
    latest_version: int
    aliases: dict[str, int]
    created_at: datetime
    version_count: int


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version and what is known about it."""

    name: str
    version: int
    aliases: list[str]
    format: str
    manifest_digest: str
    key_id: str
    metrics: dict[str, float]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    run_id: str | None
    tags: dict[str, str]
    created_at: datetime

    @property
    def ref(self) -> str:
        """``name:version``, which always names exactly this version."""
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class StageInfo:
    """How one stage of a run ended (or, run by a stage worker, that it runs): which worker
    ran it, how many times it was started, and the artifact-store digests it produced."""

    name: str
    status: str
    started_at: datetime
    duration_s: float
    error: str | None
    worker: str | None = None
    attempts: int = 1
    outputs: dict[str, Any] | None = None


@dataclass(frozen=True)
class StageClaim:
    """What ``Runs.claim_stage`` found: ``claimed`` (the caller now holds the stage, row
    ``stage_id``), ``done`` (it succeeded before: ``outputs``), ``busy`` (a live worker holds
    it: until ``lease_expires_at`` unless it renews) or ``finished`` (the run ended: nothing
    is left to do)."""

    outcome: Literal["claimed", "done", "busy", "finished"]
    stage_id: int | None = None
    attempts: int = 0
    outputs: dict[str, Any] | None = None
    worker: str | None = None
    lease_expires_at: datetime | None = None


@dataclass(frozen=True)
class RunInfo:
    """One pipeline run with its stages (in order) and metrics."""

    id: str
    spec_name: str
    status: str
    params: dict[str, Any]
    dataset_sha256: str | None
    package_version: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    stages: list[StageInfo]
    metrics: dict[str, float]

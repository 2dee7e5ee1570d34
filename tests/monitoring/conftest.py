"""A watched model for the monitor's tests: a registered version with a reference profile
of N(0, 1) features, a Parquet prediction log to write its predictions into, and a clock
the test moves."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from brokers import SHARED
from shipyard.data import TableSchema, profile_frame
from shipyard.data.schema import Column
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.monitoring.log import ParquetLog, prediction_table
from shipyard.monitoring.tracker import ModelTracker, TrackerOptions
from shipyard.registry import ModelVersionInfo, Registry
from shipyard.settings import Settings

MODEL = "fraud"
NAMES = ["f0", "f1", "f2", "f3"]
OUTPUT_SCHEMA: dict[str, Any] = {
    "task": "classification",
    "classes": [0, 1],
    "outputs": [{"name": "probability", "dtype": "float32"}, {"name": "label", "dtype": "int64"}],
}
OFFLINE = {"average_precision": 0.9, "roc_auc": 0.95, "f1": 0.8}


def reference_profile(rows: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The profile of ``rows`` N(0, 1) rows of every feature, with a score column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(NAMES))), columns=NAMES)
    frame["label"] = (frame["f0"] > 0).astype("int64")
    schema = TableSchema(
        columns=[
            *(Column(name=n, dtype="float64") for n in NAMES),
            Column(name="label", dtype="int64"),
        ],
        target="label",
    )
    profile = profile_frame(frame, schema)
    score = pd.DataFrame({"score": rng.random(rows)})
    profile["score"] = profile_frame(
        score, TableSchema(columns=[Column(name="score", dtype="float64")])
    )["features"]["score"]
    return profile


def register_watched(
    registry: Registry,
    *,
    tags: dict[str, str] | None = None,
    profile: bool = True,
    name: str = MODEL,
) -> ModelVersionInfo:
    """A new version of the watched model (fake artifact: the monitor never loads it)."""
    return registry.register_version(
        name,
        files={"model.onnx": b"not loaded by the monitor"},
        format="onnx",
        input_schema={"features": NAMES},
        output_schema=OUTPUT_SCHEMA,
        metrics=OFFLINE,
        reference_profile=reference_profile() if profile else None,
        tags=tags,
    )


@dataclass
class Clock:
    """A clock the test moves; starts now (log files are named by the wall clock)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Watched:
    """A registry with the model, its log, a clock, and helpers to feed them."""

    registry: Registry
    log: ParquetLog
    clock: Clock
    settings: Settings
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(1))
    written: int = 0
    model: str = MODEL

    def predict(
        self,
        n: int,
        *,
        version: int = 1,
        shift: float = 0.0,
        scores: np.ndarray | None = None,
        prefix: str = "p",
        ago_s: float = 0.0,
    ) -> list[str]:
        """Log ``n`` predictions made ``ago_s`` before the clock; returns their ids."""
        ids = [f"{prefix}{self.written + i}" for i in range(n)]
        self.written += n
        features = self.rng.normal(size=(n, len(NAMES))).astype(np.float32) + shift
        score = self.rng.random(n) if scores is None else scores
        outputs = {"probability": score, "label": (score >= 0.5).astype(np.int64)}
        when = self.clock.now - timedelta(seconds=ago_s)
        table = prediction_table(
            self.model, version, "http", ids, NAMES, features, outputs, 1.0, when
        )
        self.log.write(table)
        return ids

    def label(self, ids: list[str], labels: list[str]) -> None:
        """Feedback for ``ids``, as the feedback routes store it."""
        self.registry.monitoring.add_feedback(
            self.model, list(zip(ids, labels, strict=True)), source="http"
        )

    def tracker(self, **options: Any) -> ModelTracker:
        """A tracker as a monitor that just took the lease makes it (rebuilt)."""
        defaults: dict[str, Any] = {
            "feedback_window_s": 3600.0,
            "index_rows": 100_000,
            "grace_s": 0.0,
            "window_rows": 500,
            "window_minutes": 60.0,
        }
        tracker = ModelTracker(
            self.model, self.registry, self.log, TrackerOptions(**(defaults | options)), self.clock
        )
        tracker.rebuild()
        return tracker


@pytest.fixture
def watched(settings: Settings, tmp_path: Path) -> Iterator[Watched]:
    """fraud v1 registered with a profile, an empty log and a clock, on each database."""
    with Registry.open(settings) as registry:
        register_watched(registry)
        yield Watched(registry, ParquetLog(tmp_path / "predictions"), Clock(), settings)


#: The brokers the monitor's queues are tested on: those the stream supports.
BROKERS = ["memory", "embedded", "nats", "rabbitmq", "redis"]


@pytest.fixture(params=BROKERS)
def monitor_broker(
    request: pytest.FixtureRequest, service: Callable[[str, int], None], tmp_path: Path
) -> Iterator[str]:
    """A broker URL per backend: a memory namespace of its own, the embedded nats-server of
    a home of its own, or a shared server on 127.0.0.1 (skipped when unreachable, failed
    in CI)."""
    if request.param == "memory":
        yield f"memory://monitor-{uuid.uuid4().hex}"
    elif request.param == "embedded":
        with EmbeddedNats(tmp_path / "embedded-home") as url:
            yield url
    else:
        request.applymarker(pytest.mark.integration)
        name, port, url = SHARED[request.param]
        service(name, port)
        yield url


@pytest.fixture
def watched_on_sqlite(sqlite_settings: Settings, tmp_path: Path) -> Iterator[Watched]:
    """Like ``watched``, on SQLite only, and under a model name no other test uses, so that
    its ``<model>.feedback`` and ``<model>.events`` queues on a shared broker are its own."""
    model = f"{MODEL}-{uuid.uuid4().hex[:10]}"
    with Registry.open(sqlite_settings) as registry:
        register_watched(registry, name=model)
        log = ParquetLog(tmp_path / "predictions")
        yield Watched(registry, log, Clock(), sqlite_settings, model=model)

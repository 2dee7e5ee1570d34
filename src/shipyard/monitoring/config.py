"""How a model is monitored: the ``monitoring:`` section of its pipeline spec.

The register stage stores the section, validated, as JSON in the version's ``monitoring``
tag, so every version carries the rules it was registered with; the monitor reads them from
there and uses the defaults below for anything the spec leaves out::

    monitoring:
      windows: {rows: 1000, minutes: 60, min_rows: 1000}
      performance: {metric: average_precision, margin: 0.05, min_labelled: 100, min_per_class: 10}
      drift:                       # monitoring/drift.py's DriftConfig
        default: {method: wasserstein, threshold: 0.1}
        features: {Amount: {method: psi, threshold: 0.2}}
        drift_share: 0.5
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import InvalidInputError
from shipyard.monitoring.drift import DriftConfig
from shipyard.monitoring.performance import LIVE_METRICS

#: The version tag that holds the spec's ``monitoring`` section as JSON.
TAG = "monitoring"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowsSpec(_Strict):
    """The windows each version's live rows are judged over."""

    rows: int = Field(default=1000, gt=0, description="count window: the last N predictions")
    minutes: float = Field(default=60.0, gt=0, description="time window: the last T minutes")
    min_rows: int | None = Field(
        default=None,
        gt=0,
        description="a time window with fewer rows gives no verdict (default: the count "
        "window's rows — a smaller sample flags features by chance)",
    )


class PerformanceSpec(_Strict):
    """When live performance counts as degraded."""

    metric: str | None = Field(
        default=None,
        description="metric compared with the offline one; default the first of "
        "average_precision, roc_auc, f1, accuracy, rmse, mae, r2 the version has",
    )
    margin: float = Field(default=0.05, ge=0, description="absolute drop that is a degradation")
    min_labelled: int = Field(
        default=100, gt=0, description="fewest labelled rows in a window to judge it"
    )
    min_per_class: int = Field(
        default=10,
        ge=1,
        description="a classifier's window is judged only when each class has this many "
        "labelled rows: a ranking metric over a handful of positives is noise, not evidence",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in LIVE_METRICS:
            raise ValueError(
                f"unknown live metric {value!r}; choose from {', '.join(LIVE_METRICS)}"
            )
        return value


class MonitoringSpec(_Strict):
    """A model's monitoring rules; every part has defaults."""

    windows: WindowsSpec = WindowsSpec()
    performance: PerformanceSpec = PerformanceSpec()
    drift: dict[str, Any] = Field(default_factory=dict)

    @field_validator("drift")
    @classmethod
    def _valid_drift(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return DriftConfig.from_mapping(value).to_mapping()
        except InvalidInputError as error:
            raise ValueError(str(error)) from error

    def drift_config(self) -> DriftConfig:
        """The drift rules as ``detect_drift`` takes them."""
        return DriftConfig.from_mapping(self.drift)

    def to_tag(self) -> str:
        """The JSON stored in the version's ``monitoring`` tag."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> MonitoringSpec:
        """The rules a version was registered with (defaults when it has none)."""
        text = tags.get(TAG)
        if not text:
            return cls()
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as error:
            raise InvalidInputError(
                f"the version's {TAG!r} tag is not a valid monitoring section ({error}); "
                "register the version again from a spec whose `monitoring:` validates"
            ) from error

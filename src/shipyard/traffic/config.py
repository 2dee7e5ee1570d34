"""What a traffic run does: users or an arrival rate, bounds, labels, think times, drift.

``TrafficConfig.check`` refuses a configuration that cannot run (a minimum above its
maximum, a probability outside [0, 1], no bound) with a message naming the option to fix,
before anything is sent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from shipyard.errors import InvalidInputError

#: The bound of a run given neither --duration nor --requests.
DEFAULT_DURATION_S = 60.0


class Protocol(StrEnum):
    """How a user asks for a prediction."""

    OIP = "oip"
    MLFLOW = "mlflow"
    JSON = "json"
    STREAM = "stream"

    @property
    def is_http(self) -> bool:
        """Whether the protocol is one of the server's HTTP routes."""
        return self is not Protocol.STREAM


@dataclass(frozen=True)
class TrafficConfig:
    """One run's options, as the CLI takes them (times in seconds)."""

    model: str = "fraud"
    protocol: Protocol = Protocol.OIP
    users: int = 10
    rate: float | None = None
    """Arrivals per second (open loop); None: closed-loop users."""
    duration_s: float | None = None
    requests: int | None = None
    seed: int = 0
    label_probability: float = 0.0
    label_delay_min_s: float = 0.0
    label_delay_max_s: float = 0.0
    label_noise: float = 0.0
    think_min_s: float = 0.0
    think_max_s: float = 0.0
    drift_at_s: float | None = None
    """When the users switch to the drifted rows; None: never."""
    timeout_s: float = 10.0
    label_interval_s: float = 0.05
    """How often the labels that are due are sent, in one batch: a label goes out at most
    this long (plus the previous batch's send time) after its delay, so within
    [--label-delay-min, --label-delay-max + 0.05 s] under normal load."""

    def check(self) -> TrafficConfig:
        """This configuration, or ``InvalidInputError`` naming the option to fix."""
        _positive_int("--users", self.users)
        if self.requests is not None:
            _positive_int("--requests", self.requests)
        for option, value in (
            ("--duration", self.duration_s),
            ("--rate", self.rate),
            ("--timeout", self.timeout_s),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"{option} must be a positive number, got {value!r}")
        for option, value in (
            ("--label-probability", self.label_probability),
            ("--label-noise", self.label_noise),
        ):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidInputError(f"{option} must be between 0 and 1, got {value!r}")
        _range("--label-delay", self.label_delay_min_s, self.label_delay_max_s)
        _range("--think", self.think_min_s, self.think_max_s)
        if self.drift_at_s is not None and not (
            math.isfinite(self.drift_at_s) and self.drift_at_s >= 0
        ):
            raise InvalidInputError(
                f"--drift-at must be a number of seconds from the start, got {self.drift_at_s!r}"
            )
        if self.rate is not None and self.think_max_s > 0:
            raise InvalidInputError(
                "--think-min/--think-max pace closed-loop users; with --rate the arrivals "
                "follow the rate alone: drop one of them"
            )
        return self

    @property
    def bounded_duration_s(self) -> float | None:
        """The run's time bound: --duration, or the default when no bound was given."""
        if self.duration_s is None and self.requests is None:
            return DEFAULT_DURATION_S
        return self.duration_s

    def as_dict(self) -> dict[str, Any]:
        """The options as JSON values, for the summary."""
        values = asdict(self)
        values["protocol"] = self.protocol.value
        values["duration_s"] = self.bounded_duration_s
        return values


def _positive_int(option: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{option} must be a whole number of at least 1, got {value!r}")


def _range(option: str, low: float, high: float) -> None:
    for bound, value in (("min", low), ("max", high)):
        if not (math.isfinite(value) and value >= 0):
            raise InvalidInputError(
                f"{option}-{bound} must be a number of seconds, 0 or more, got {value!r}"
            )
    if low > high:
        raise InvalidInputError(
            f"{option}-min ({low:g} s) is above {option}-max ({high:g} s); "
            f"give a minimum no larger than the maximum"
        )

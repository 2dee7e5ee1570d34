"""Checks of what callers hand the registry to store: metric values and JSON documents."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from shipyard.errors import InvalidInputError


def check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics as plain floats; ``InvalidInputError`` for a bad name or a non-finite value."""
    values: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"metric names must be non-empty strings, got {key!r}")
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"metric {key!r} is {value!r}, not a number") from error
        if not math.isfinite(number):
            raise InvalidInputError(
                f"metric {key!r} is {number}; only finite numbers can be recorded"
            )
        values[key] = number
    return values


def check_json(value: Any, what: str) -> None:
    """``InvalidInputError`` unless ``value`` is plain JSON (no NaN or infinity)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"the {what} must be plain JSON (no NaN or infinity): {error}"
        ) from error

"""Prediction ids: the string a client quotes back with its feedback.

A client may give its own (at most ``MAX_ID_LENGTH`` characters); otherwise the server
assigns time-ordered UUIDv7 strings (``uuid-utils``: a fraction of a microsecond each), so
ids sort by when they were made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import uuid_utils

from shipyard.errors import InvalidInputError
from shipyard.registry.monitoring import MAX_ID_LENGTH


def new_id() -> str:
    """One time-ordered id (UUIDv7)."""
    return str(uuid_utils.uuid7())


def new_ids(count: int) -> list[str]:
    """``count`` time-ordered ids (UUIDv7), in order."""
    make = uuid_utils.uuid7
    return [str(make()) for _ in range(count)]


def id_problem(value: Any) -> str | None:
    """What is wrong with a client's id, or None when it is a good one."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
    return None


def check_id(value: Any, where: str) -> str:
    """A client's id, or ``InvalidInputError`` naming ``where`` it is (``row 3``)."""
    problem = id_problem(value)
    if problem is not None:
        raise InvalidInputError(f"the id of {where} {problem}")
    result: str = value
    return result


def check_ids(values: Sequence[Any], where: str = "row") -> list[str]:
    """Clients' ids, one per row; ``InvalidInputError`` names the first bad row."""
    for row, value in enumerate(values):
        check_id(value, f"{where} {row}")
    return list(values)

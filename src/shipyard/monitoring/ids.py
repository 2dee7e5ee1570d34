"""Prediction ids: the string a client quotes back with its feedback.

A client may give its own (at most ``MAX_ID_LENGTH`` characters): a JSON string, or an
integer, which stands for its decimal text (``7`` is the id ``"7"``, as in a CSV body; pandas
``to_json`` sends an integer id column as numbers). Otherwise the server assigns time-ordered
UUIDv7 strings (``uuid-utils``: a fraction of a microsecond each), so ids sort by when they
were made.
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


def as_id(value: Any) -> Any:
    """An integer id (not a bool) as its decimal text; anything else as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def id_problem(value: Any) -> str | None:
    """What is wrong with a client's id (after ``as_id``), or None when it is a good one."""
    if not isinstance(value, str):
        return (
            f"must be a string, got {type(value).__name__}; send ids as JSON strings, "
            'e.g. "7" (whole numbers are taken as their text)'
        )
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed"
    return None


def check_id(value: Any, where: str) -> str:
    """A client's id as text (an integer as its decimal text), or ``InvalidInputError``
    naming ``where`` it is (``row 3``)."""
    value = as_id(value)
    problem = id_problem(value)
    if problem is not None:
        raise InvalidInputError(f"the id of {where} {problem}")
    result: str = value
    return result


def check_ids(values: Sequence[Any], where: str = "row") -> list[str]:
    """Clients' ids as text, one per row; ``InvalidInputError`` names the first bad row."""
    return [check_id(value, f"{where} {row}") for row, value in enumerate(values)]

"""How users name a model version: ``name`` (latest), ``name:3`` or ``name@production``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipyard.errors import InvalidInputError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
NAME = re.compile(rf"^{NAME_PATTERN}$")
REF = re.compile(rf"^(?P<name>{NAME_PATTERN})(?::(?P<version>\d+)|@(?P<alias>{NAME_PATTERN}))?$")
MAX_VERSION = 2**31 - 1  # the INTEGER column of PostgreSQL holds no more
DEFAULT_ALIAS = "production"
"""The alias a pipeline promotes to, ``promote`` and ``rollback`` move, and a served bare
``NAME`` means."""
SHADOW_ALIAS = "shadow"
"""The alias of a retrained candidate that scores live requests beside production without
answering them (``retrain.gate.shadow``); servers load it and log its predictions."""
FORMS = (
    f"NAME (latest version), NAME:VERSION (e.g. fraud:3) or NAME@ALIAS (e.g. fraud@{DEFAULT_ALIAS})"
)
CHARACTERS = "letters, digits, '-', '_' and '.', starting with a letter or digit"


def check_name(value: str, what: str = "model name") -> str:
    """Return ``value`` if it is a valid model name or alias, else raise ``InvalidInputError``."""
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidInputError(f"{value!r} is not a valid {what}; use {CHARACTERS}")
    return value


@dataclass(frozen=True)
class ModelRef:
    """A reference to one model version; neither version nor alias means the latest."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.version is not None and self.alias is not None:
            raise InvalidInputError(f"give a version or an alias, not both; use {FORMS}")
        if self.version is not None and not 1 <= self.version <= MAX_VERSION:
            raise InvalidInputError(
                f"version {self.version} is out of range; versions run from 1 to {MAX_VERSION}"
            )
        if self.alias is not None:
            check_name(self.alias, "alias")

    @classmethod
    def parse(cls, text: str | ModelRef) -> ModelRef:
        """Parse ``name``, ``name:VERSION`` or ``name@ALIAS``."""
        if isinstance(text, ModelRef):
            return text
        match = REF.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidInputError(f"{text!r} is not a model reference; use {FORMS}")
        version = match["version"]
        if version is not None and len(version) > len(str(MAX_VERSION)):
            # Checked on the text: int() refuses numbers of over 4,300 digits.
            raise InvalidInputError(
                f"version {version[:20]}… is out of range; versions run from 1 to {MAX_VERSION}"
            )
        return cls(match["name"], int(version) if version is not None else None, match["alias"])

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name

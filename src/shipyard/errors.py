"""The one exception tree of Shipyard.

Every error a user can cause or meet is a ``ShipyardError``. Each class knows the HTTP status it
maps to, the CLI exit code, and whether a stream message that raised it should be retried
(``retryable``) or dead-lettered. Messages say what was wrong and what to do about it.

::

    ShipyardError                      500  exit 1
    ├── ConfigurationError             500  exit 2   settings, keys, environment
    ├── AuthenticationError            401  exit 2   credentials missing, wrong, expired, revoked
    ├── PermissionDeniedError          403  exit 2   known caller, role too low
    ├── InvalidInputError              400  exit 2   the caller sent something wrong
    │   ├── SchemaError                422  exit 2   columns missing or of the wrong type
    │   └── SpecError                  400  exit 2   a pipeline spec that does not validate
    ├── NotFoundError                  404  exit 3
    │   ├── ModelNotFoundError
    │   ├── VersionNotFoundError
    │   └── AliasNotFoundError
    ├── ConflictError                  409  exit 4   state forbids it (nothing to roll back to)
    ├── ArtifactError                  500  exit 5   a stored artifact cannot be trusted or read
    │   ├── ArtifactTamperedError               digest does not match the manifest
    │   └── SignatureError                      signature missing, wrong or from an unknown key
    └── UnavailableError               503  exit 6   a backend (database, broker) cannot be reached
"""

from __future__ import annotations


class ShipyardError(Exception):
    """Root of every error Shipyard raises on purpose."""

    status_code: int = 500
    exit_code: int = 1
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ShipyardError):
    """Settings, keys or the environment are not usable as they are."""

    exit_code = 2


class AuthenticationError(ShipyardError):
    """Credentials are missing, wrong, expired or revoked."""

    status_code = 401
    exit_code = 2


class PermissionDeniedError(ShipyardError):
    """The caller is known but their role does not allow the action."""

    status_code = 403
    exit_code = 2


class InvalidInputError(ShipyardError):
    """The caller sent something Shipyard cannot accept."""

    status_code = 400
    exit_code = 2


class SchemaError(InvalidInputError):
    """A table or request does not match the schema it must follow."""

    status_code = 422


class SpecError(InvalidInputError):
    """A pipeline spec is missing, not YAML, or does not validate."""


class NotFoundError(ShipyardError):
    """A named thing does not exist."""

    status_code = 404
    exit_code = 3


class ModelNotFoundError(NotFoundError):
    """No model has this name."""


class VersionNotFoundError(NotFoundError):
    """The model exists but not this version."""


class AliasNotFoundError(NotFoundError):
    """The model exists but no version carries this alias."""


class ConflictError(ShipyardError):
    """The current state forbids the action."""

    status_code = 409
    exit_code = 4


class ArtifactError(ShipyardError):
    """A stored artifact cannot be read or trusted."""

    exit_code = 5


class ArtifactTamperedError(ArtifactError):
    """An artifact's bytes do not match the digest its manifest records."""


class SignatureError(ArtifactError):
    """An artifact's manifest is unsigned, wrongly signed, or signed by an untrusted key."""


class UnavailableError(ShipyardError):
    """A backend service cannot be reached; trying again later may work."""

    status_code = 503
    exit_code = 6
    retryable = True

"""The one exception tree of Shipyard.

Every error a user can cause or meet is a ``ShipyardError``. Each class knows the HTTP status it
maps to, the CLI exit code, and whether the operation that raised it may simply be tried again
(``retryable``, ``retried`` below): the stream scorer retries those with back-off, dead-letters
a message an ``InvalidInputError`` refuses, and stops on any other (its unacked messages go to
another worker). Messages say what was wrong and what to do about it. Every exception class of
Shipyard is defined here and drawn here.

::

    ShipyardError                      500  exit 1
    ├── ConfigurationError             500  exit 2           settings, keys, environment
    ├── AuthenticationError            401  exit 2           missing, wrong, expired, revoked token
    ├── PermissionDeniedError          403  exit 2           known caller, role too low
    ├── InvalidInputError              400  exit 2           the caller sent something wrong
    │   ├── SchemaError                422  exit 2           columns missing or mistyped
    │   ├── SpecError                  400  exit 2           a pipeline spec that does not validate
    │   ├── PayloadTooLargeError       413  exit 2           a request body over the size limit
    │   │   └── BodyTooLargeError      413  exit 2           … the server's limit, not an image's
    │   ├── UnsupportedMediaTypeError  415  exit 2           a body type the route does not read
    │   └── FetchError                 502  exit 2           a URL the caller named gave no image
    │       └── FetchTimeoutError      504  exit 2           … not within the time allowed
    ├── NotFoundError                  404  exit 3
    │   ├── ModelNotFoundError         404  exit 3
    │   ├── VersionNotFoundError       404  exit 3
    │   └── AliasNotFoundError         404  exit 3
    ├── ConflictError                  409  exit 4           state forbids it (no earlier version)
    │   └── LeaseLostError             409  exit 4           a monitor wrote for a model it lost
    ├── ArtifactError                  500  exit 5           a stored artifact is unusable
    │   ├── ArtifactTamperedError      500  exit 5           digest does not match the manifest
    │   └── SignatureError             500  exit 5           signature missing, wrong or untrusted
    ├── BatcherClosedError             503  exit 1  retried  the version was replaced mid-request
    └── UnavailableError               503  exit 6  retried  a database or broker is unreachable
        ├── BackpressureError          503  exit 6  retried  a queue is full; names what it refused
        ├── ClusterError               503  exit 6  retried  the Dask scheduler is unreachable, lost
        └── PredictionLogError         503  exit 6  retried  the prediction log cannot be written
"""

from __future__ import annotations

from collections.abc import Sequence


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


class PayloadTooLargeError(InvalidInputError):
    """A request body is larger than ``max_body_bytes``."""

    status_code = 413


class BodyTooLargeError(PayloadTooLargeError):
    """A request body over the server's ``max_body_bytes`` (not an image over its own limit)."""


class UnsupportedMediaTypeError(InvalidInputError):
    """The body's content type is not one this route reads."""

    status_code = 415


class FetchError(InvalidInputError):
    """A URL the caller named (an image to classify) could not be fetched: refused, an
    error status, a broken connection. The caller's input, so a stream dead-letters it."""

    status_code = 502


class FetchTimeoutError(FetchError):
    """A URL the caller named did not connect, answer or finish within the time allowed."""

    status_code = 504


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


class LeaseLostError(ConflictError):
    """A monitor tried to write a model's state after its lease went to another monitor;
    the write was refused and the monitor must let the model go."""


class ArtifactError(ShipyardError):
    """A stored artifact cannot be read or trusted."""

    exit_code = 5


class ArtifactTamperedError(ArtifactError):
    """An artifact's bytes do not match the digest its manifest records."""


class SignatureError(ArtifactError):
    """An artifact's manifest is unsigned, wrongly signed, or signed by an untrusted key."""


class BatcherClosedError(ShipyardError):
    """The batcher was closed (its model version was replaced); retry on the new version."""

    status_code = 503
    retryable = True


class UnavailableError(ShipyardError):
    """A backend service cannot be reached; trying again later may work."""

    status_code = 503
    exit_code = 6
    retryable = True


class BackpressureError(UnavailableError):
    """The target queue is full; publish the ``refused`` messages again later.

    ``refused`` holds the positions, in the published batch, of the messages the broker did
    not store; the others are stored. Backends that check the bound for the whole batch at
    once refuse all of it.
    """

    def __init__(self, message: str, refused: Sequence[int]) -> None:
        super().__init__(message)
        self.refused = tuple(refused)


class ClusterError(UnavailableError):
    """The Dask scheduler cannot be reached, or was lost while it ran work; what finished
    before is kept (``--resume``)."""


class PredictionLogError(UnavailableError):
    """The prediction log's store cannot be written or read now (a full or read-only
    folder, an unreachable database); the stream scorer waits for it rather than lose
    records."""

"""The secret that signs access tokens: from ``SHIPYARD_AUTH_SECRET``, or a file under the home."""

from __future__ import annotations

import os
from pathlib import Path

from shipyard.errors import ConfigurationError
from shipyard.files import write_private
from shipyard.settings import Settings

SECRET_BYTES = 32


def token_secret(settings: Settings) -> bytes:
    """``auth_secret`` if set, else the secret file under the home (made on first use)."""
    if settings.auth_secret is not None:
        return settings.auth_secret.get_secret_value().encode("utf-8")
    return load_or_create_secret(settings.auth_secret_path)


def load_or_create_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path`` (hex), created with mode 0600 if missing.

    Several server workers may start at once: the file appears atomically and the first
    writer wins, so they all end up signing with the same secret.
    """
    if not path.exists():
        _create_secret(path)
    try:
        text = path.read_text(encoding="ascii").strip()
        secret = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigurationError(
            f"cannot read the token-signing secret at {path} ({error}); delete it to make a new "
            "one (signed-in users will need new tokens) or set SHIPYARD_AUTH_SECRET"
        ) from error
    if len(secret) < SECRET_BYTES:
        raise ConfigurationError(
            f"the token-signing secret at {path} is shorter than {SECRET_BYTES} bytes; "
            "delete it to make a new one or set SHIPYARD_AUTH_SECRET"
        )
    return secret


def _create_secret(path: Path) -> None:
    secret = os.urandom(SECRET_BYTES).hex() + "\n"
    try:
        write_private(path, secret.encode("ascii"), overwrite=False)  # one made first wins
    except OSError as error:
        raise ConfigurationError(
            f"cannot create the token-signing secret at {path} ({error}); make its folder "
            "writable or set SHIPYARD_AUTH_SECRET"
        ) from error

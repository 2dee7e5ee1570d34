"""The symmetric key that keeps artifact blobs encrypted at rest, and the sealed-blob format.

A secret key file holds 32 random bytes as hex (mode 0600). A key is named by its id, the
first 16 hex characters of the SHA-256 of the key, so a sealed blob can say which key it
needs without revealing it. A sealed blob is::

    MAGIC (8 bytes) | format version (1 byte) | key id (8 bytes) | SecretBox nonce + ciphertext

The blob keeps the address of its plaintext (``ArtifactStore`` re-hashes after opening), so
a sealed blob moved to another address, or a ciphertext altered in place, is refused.
Nothing here logs or prints the key; ``repr`` shows its id only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.utils import random

from shipyard.errors import ArtifactError, ArtifactTamperedError, ConfigurationError
from shipyard.files import write_private

KEY_BYTES = SecretBox.KEY_SIZE
MAGIC = b"SHIPSEAL"
FORMAT_VERSION = 1
KEY_ID_BYTES = 8
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES
SETTING = "SHIPYARD_SECRET_KEY"


def secret_key_id(key: bytes) -> str:
    """The short, stable name of a raw secret key."""
    return hashlib.sha256(key).hexdigest()[: 2 * KEY_ID_BYTES]


@dataclass(frozen=True)
class SecretKeyFile:
    """Where a freshly generated secret key was written, and its key id."""

    path: Path
    key_id: str


def generate_secret_key(path: Path, *, force: bool = False) -> SecretKeyFile:
    """Write a new random secret key to ``path`` (mode 0600); an existing file is kept
    unless ``force``."""
    exists = ConfigurationError(
        f"a secret key already exists at {path}; blobs encrypted with it cannot be read "
        "without it, so it is kept. Pass `--force` (force=True) to replace it, or choose "
        "another path"
    )
    if path.exists() and not force:
        raise exists
    key = random(KEY_BYTES)
    # Without force, a key another process wrote meanwhile is kept.
    if not write_private(path, (key.hex() + "\n").encode("ascii"), overwrite=force):
        raise exists
    return SecretKeyFile(path, secret_key_id(key))


class SecretKey:
    """Seals and opens blobs with one SecretBox (XSalsa20-Poly1305) key."""

    def __init__(self, key: bytes, path: Path | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secret key is {KEY_BYTES} bytes, not {len(key)}")
        self._box = SecretBox(key)
        self.key_id: str = secret_key_id(key)
        self.path = path

    def __repr__(self) -> str:
        return f"SecretKey(key_id={self.key_id!r}, path={self.path!r})"

    @classmethod
    def load(cls, path: Path) -> SecretKey:
        """Read a key file written by ``generate_secret_key`` (hex; surrounding blanks ignored)."""
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError as error:
            raise ConfigurationError(
                f"no secret key at {path} (named by {SETTING} or --secret); make one with "
                f"`shipyard keys generate --secret {path}`, or point {SETTING} at the key file"
            ) from error
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(
                f"cannot read the secret key at {path} ({type(error).__name__}); check that it "
                "is the file `shipyard keys generate --secret` wrote and that you may read it"
            ) from error
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            # The message never quotes the file: it may hold a key in another format.
            raise ConfigurationError(
                f"{path} is not a secret key (expected {KEY_BYTES} bytes as hex); make one "
                "with `shipyard keys generate --secret PATH`"
            )
        return cls(key, path)

    def seal(self, plaintext: bytes) -> bytes:
        """The sealed blob of ``plaintext``: header, nonce, ciphertext."""
        header = MAGIC + bytes([FORMAT_VERSION]) + bytes.fromhex(self.key_id)
        return header + bytes(self._box.encrypt(plaintext))

    def open(self, sealed: bytes, where: str) -> bytes:
        """The plaintext of a sealed blob this key sealed; ``where`` names it in errors."""
        needed = sealed_key_id(sealed, where)
        if needed != self.key_id:
            raise ArtifactError(
                f"{where} is encrypted with secret key {needed}, but {SETTING} names key "
                f"{self.key_id}; point {SETTING} at key {needed}'s file, or re-encrypt the "
                f"store with `shipyard keys rotate --secret NEW --old OLD`"
            )
        try:
            return self._box.decrypt(sealed[HEADER_BYTES:])
        except CryptoError as error:
            raise ArtifactTamperedError(
                f"{where} does not decrypt with secret key {self.key_id}: its ciphertext was "
                "modified after it was stored and is refused"
            ) from error


def is_sealed(blob: bytes) -> bool:
    """Whether ``blob`` starts like a sealed blob (magic bytes)."""
    return blob.startswith(MAGIC)


def sealed_key_id(sealed: bytes, where: str) -> str:
    """The id of the key a sealed blob needs; ``where`` names the blob in errors."""
    if len(sealed) < HEADER_BYTES or not is_sealed(sealed):
        raise ArtifactTamperedError(
            f"{where} has a cut-short encryption header: it was modified after it was stored "
            "and is refused"
        )
    version = sealed[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{where} is encrypted in format {version}, this Shipyard reads format "
            f"{FORMAT_VERSION}; upgrade Shipyard to read it"
        )
    return sealed[len(MAGIC) + 1 : HEADER_BYTES].hex()

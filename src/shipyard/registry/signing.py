"""Ed25519 keys that sign artifact manifests, and the set of public keys trusted to verify them.

A private key file holds the 32-byte seed as hex; its public half sits next to it as
``<stem>.pub`` (hex). A key is named by its id: the first 16 hex characters of the SHA-256 of
the raw public key, so a manifest can say which key signed it without embedding the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from shipyard.errors import ConfigurationError, SignatureError
from shipyard.files import write_private, write_whole

SEED_BYTES = 32


def key_id_of(public_key: bytes) -> str:
    """The short, stable name of a raw Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def public_path_of(private_path: Path) -> Path:
    """Where the public half of a private key file lives."""
    return private_path.with_name(f"{private_path.stem}.pub")


@dataclass(frozen=True)
class KeyPair:
    """Where a freshly generated key pair was written, and its key id."""

    private_path: Path
    public_path: Path
    key_id: str


def generate_keypair(private_path: Path, *, force: bool = False) -> KeyPair:
    """Write a new private key (mode 0600) and its ``.pub`` file next to it."""
    public_path = public_path_of(private_path)
    exists = ConfigurationError(
        f"a signing key already exists at {private_path}; artifacts it signed need its .pub "
        "file to verify, so it is kept. Pass `--force` (force=True) to replace it"
    )
    if not force and (private_path.exists() or public_path.exists()):
        raise exists
    key = SigningKey.generate()
    public = bytes(key.verify_key)
    # Without force, a key another process wrote meanwhile is kept, and so is its .pub file.
    if not write_private(private_path, (bytes(key).hex() + "\n").encode("ascii"), overwrite=force):
        raise exists
    write_whole(public_path, (public.hex() + "\n").encode("ascii"))  # never read half-written
    return KeyPair(private_path, public_path, key_id_of(public))


def _decode_key(text: str, path: Path, what: str) -> bytes:
    text = text.strip()
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != SEED_BYTES:
        raise ConfigurationError(
            f"{path} is not a valid Ed25519 {what} (expected {SEED_BYTES} bytes as hex or "
            "base64); regenerate it with `shipyard keys generate --force`"
        )
    return raw


class Signer:
    """Signs bytes with one private key."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self.public_key: bytes = bytes(key.verify_key)
        self.key_id: str = key_id_of(self.public_key)

    @classmethod
    def load(cls, private_path: Path, *, create: bool = False) -> Signer:
        """Read a private key file; with ``create``, generate one when it is missing."""
        if not private_path.exists():
            if not create:
                raise ConfigurationError(
                    f"no signing key at {private_path}; run `shipyard keys generate`"
                )
            try:
                generate_keypair(private_path)
            except ConfigurationError:
                if not private_path.exists():
                    raise
                # Another process made the key first: sign with theirs.
        try:
            text = private_path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(
                f"cannot read the signing key at {private_path} ({error}); check its permissions"
            ) from error
        return cls(SigningKey(_decode_key(text, private_path, "private key")))

    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self._key.sign(data).signature).decode("ascii")


class TrustedKeys:
    """The public keys whose signatures are accepted, by key id."""

    def __init__(self, keys: dict[str, VerifyKey], folder: Path | None = None) -> None:
        self._keys = dict(keys)
        self.folder = folder

    @classmethod
    def load(cls, folder: Path) -> TrustedKeys:
        """Read every ``*.pub`` file in ``folder``; a missing folder trusts nothing."""
        keys: dict[str, VerifyKey] = {}
        if folder.is_dir():
            for path in sorted(folder.glob("*.pub")):
                try:
                    text = path.read_text(encoding="ascii")
                except (OSError, UnicodeDecodeError) as error:
                    raise ConfigurationError(
                        f"cannot read trusted key {path} ({error}); fix or remove it"
                    ) from error
                raw = _decode_key(text, path, "public key")
                keys[key_id_of(raw)] = VerifyKey(raw)
        return cls(keys, folder)

    def verify(self, data: bytes, signature: str, key_id: str) -> None:
        """Raise ``SignatureError`` unless ``signature`` is a trusted key's signature of data."""
        if not signature:
            raise SignatureError("the manifest has no signature; refusing to trust it")
        key = self._keys.get(key_id)
        if key is None:
            where = self.folder if self.folder is not None else "the trusted keys folder"
            raise SignatureError(
                f"signed by key {key_id} which is not trusted; put its .pub file in {where}"
            )
        try:
            raw = base64.b64decode(signature, validate=True)
            key.verify(data, raw)
        except (binascii.Error, ValueError, BadSignatureError) as error:
            raise SignatureError(
                f"the signature does not match key {key_id}; the manifest or its signature "
                "was altered"
            ) from error

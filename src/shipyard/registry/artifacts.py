"""Content-addressed artifact files, and the signed manifest that ties them to a model version.

A blob lives at ``root/sha256/ab/<digest>``; writing is atomic and idempotent, reading re-hashes.
With a secret key, blobs are sealed at rest under the same addresses (``registry.secrets``).
A version's manifest (name, version, file digests, schemas, metrics, key id) is stored as a blob
too. Its digest and Ed25519 signature live in the database; loading checks the manifest digest,
then the signature, then every file's digest and size, and only then hands out bytes. Nothing
here deserialises the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.errors import ArtifactError, ArtifactTamperedError, SignatureError
from shipyard.registry.secrets import SETTING as SECRET_SETTING
from shipyard.registry.secrets import SecretKey, is_sealed, sealed_key_id
from shipyard.registry.signing import Signer, TrustedKeys

DIGEST = re.compile(r"^[0-9a-f]{64}$")

Rekeyed = Literal["encrypted", "reencrypted", "skipped"]
"""What re-encrypting did to one blob: the ``Reencryption`` count it adds to."""


def sha256_hex(data: bytes | memoryview) -> str:
    """The SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Blobs on disk, named by the SHA-256 of their bytes; sealed at rest when given a key.

    With ``secret``, every blob the store writes is sealed (``registry.secrets``) but keeps
    the address of its plaintext, so manifests, signatures and dedup do not change; reading
    opens it, then re-hashes. Plain blobs written before a key was set still read.
    """

    def __init__(self, root: Path, secret: SecretKey | None = None) -> None:
        self.root = root
        self.secret = secret

    def path_of(self, digest: str) -> Path:
        """Where the blob with this digest is (or would be) stored."""
        if not DIGEST.match(digest):
            raise ArtifactError(f"{digest!r} is not a sha256 hex digest")
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes | memoryview, *, durable: bool = True) -> str:
        """Store ``data`` and return its digest; storing the same bytes twice is a no-op
        (a blob already there is kept as it is, plain or sealed).

        A durable put returns once the blob is on disk (fsync), whoever wrote it first.
        ``durable=False`` leaves that to the operating system: for scratch blobs that only
        live between two steps of one job (a stage worker's handoff), where a power cut
        losing one makes the next read fail loudly (``get`` re-hashes) and nothing stored
        durably depends on it."""
        digest = sha256_hex(data)
        path = self.path_of(digest)
        if path.exists():
            if durable:
                self._sync(path)
            return digest
        self._write(path, data if self.secret is None else self.secret.seal(bytes(data)), durable)
        return digest

    def get(self, digest: str) -> bytes:
        """The blob's bytes, re-hashed: ``ArtifactTamperedError`` if they no longer match."""
        path = self.path_of(digest)
        return self._verified(self._read(path, digest), digest, path)

    def digests(self) -> Iterator[str]:
        """The digest of every blob in the store, in order (temporary files left out)."""
        for path in sorted(self.root.glob("sha256/*/*")):
            if DIGEST.match(path.name) and path.parent.name == path.name[:2]:
                yield path.name

    def reencrypt(
        self,
        new: SecretKey,
        digests: Iterable[str] | None = None,
        on_blob: Callable[[str], None] | None = None,
    ) -> Reencryption:
        """Seal every blob (or those of ``digests``) with ``new``: plain ones, and ones this
        store's key opens; ``on_blob`` is told each digest once it is done.

        Each blob is replaced in one step (temporary file, then rename), so an interrupted
        run leaves every blob whole; blobs already sealed with ``new`` are skipped, so
        running again finishes the job. A blob that cannot be opened or no longer matches
        its digest is left as it is and listed in ``failures``."""
        outcome = Reencryption()
        for digest in self.digests() if digests is None else digests:
            outcome.count(self._reencrypt(digest, new))
            if on_blob is not None:
                on_blob(digest)
        return outcome

    def _reencrypt(self, digest: str, new: SecretKey) -> Rekeyed | ArtifactError:
        """Seal one blob with ``new``: what was done (a ``Reencryption`` field), or why not."""
        path = self.path_of(digest)
        try:
            raw = self._read(path, digest)
            sealed = is_sealed(raw) and sha256_hex(raw) != digest
            if sealed and sealed_key_id(raw, f"artifact blob {path}") == new.key_id:
                return "skipped"
            data = self._verified(raw, digest, path)
            self._write(path, new.seal(data))
        except ArtifactError as error:
            return error
        return "reencrypted" if sealed else "encrypted"

    def _read(self, path: Path, digest: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError as error:
            raise ArtifactError(
                f"artifact blob {digest} is missing from {self.root}; point SHIPYARD_ARTIFACTS_DIR "
                "at the store the registry database was written with, or register the model again"
            ) from error
        except OSError as error:
            raise ArtifactError(
                f"cannot read artifact blob {digest} at {path} ({error}); check its permissions"
            ) from error

    def _verified(self, raw: bytes, digest: str, path: Path) -> bytes:
        """A blob's plaintext, checked against its digest."""
        data = self._plaintext(raw, digest, path)
        actual = sha256_hex(data)
        if actual != digest:
            raise ArtifactTamperedError(
                f"artifact blob {path} hashes to {actual}, not {digest}: it was modified after it "
                "was stored and is refused"
            )
        return data

    def _plaintext(self, raw: bytes, digest: str, path: Path) -> bytes:
        """A blob's plaintext: ``raw`` itself for a plain blob, else ``raw`` opened."""
        # A plain blob may start with the magic bytes by chance: its own hash tells.
        if not is_sealed(raw) or sha256_hex(raw) == digest:
            return raw
        where = f"artifact blob {path}"
        if self.secret is None:
            needed = sealed_key_id(raw, where)
            raise ArtifactError(
                f"{where} is encrypted with secret key {needed} and no secret key is set; "
                f"set {SECRET_SETTING} to the path of key {needed}'s file to load it"
            )
        return self.secret.open(raw, where)

    def _write(self, path: Path, data: bytes | memoryview, durable: bool = True) -> None:
        """Write ``data`` at ``path`` whole or not at all (temporary file, then rename),
        on disk before the rename when ``durable``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temporary.open("wb") as handle:
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            temporary.replace(path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise ArtifactError(
                f"cannot write artifact blob {path.name} under {self.root} ({error}); check "
                "that the folder is writable and the disk is not full"
            ) from error

    def _sync(self, path: Path) -> None:
        """Make sure a blob that is already there is on disk (a scratch put may have left it
        to the operating system)."""
        try:
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            raise ArtifactError(
                f"cannot sync artifact blob {path.name} under {self.root} ({error}); check "
                "that the folder is readable and the disk is healthy"
            ) from error


@dataclass
class Reencryption:
    """What ``ArtifactStore.reencrypt`` did: blob counts, and why blobs were left alone."""

    encrypted: int = 0
    """Plain blobs now sealed."""
    reencrypted: int = 0
    """Blobs sealed with the old key, now with the new one."""
    skipped: int = 0
    """Blobs already sealed with the new key (an earlier, interrupted run)."""
    failures: list[str] = field(default_factory=list)
    """Why each blob left as it was could not be re-encrypted."""

    def count(self, done: Rekeyed | ArtifactError) -> None:
        """Count one blob's outcome."""
        if isinstance(done, ArtifactError):
            self.failures.append(str(done))
        else:
            setattr(self, done, getattr(self, done) + 1)


class FileEntry(BaseModel):
    """One file of an artifact: its digest and size in bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """What a signature vouches for: a model version's files, schemas and metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int = Field(ge=1)
    format: str
    files: dict[str, FileEntry]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    metrics: dict[str, float]
    created_at: str
    shipyard_version: str
    key_id: str
    reference_profile_sha256: str | None = None
    """The sha256 of the reference profile's canonical JSON (``profile_digest``); absent
    from versions registered without a profile or before profiles were signed."""

    def canonical_bytes(self) -> bytes:
        """Deterministic JSON (sorted keys, compact, UTF-8): the bytes that get signed.

        An absent profile digest is left out rather than written as null, so manifests
        signed before the field existed keep their bytes (and their signatures)."""
        exclude = {"reference_profile_sha256"} if self.reference_profile_sha256 is None else None
        return json.dumps(
            self.model_dump(mode="json", exclude=exclude),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")


@dataclass(frozen=True)
class VerifiedArtifact:
    """A version's manifest and file bytes, after digest and signature checks passed."""

    manifest: Manifest
    manifest_digest: str
    files: dict[str, bytes]


@dataclass(frozen=True)
class SignedManifest:
    """A manifest as stored: its digest in the store and its signature."""

    manifest: Manifest
    digest: str
    signature: str
    key_id: str


def store_files(store: ArtifactStore, files: Mapping[str, bytes]) -> dict[str, FileEntry]:
    """Put every file in the store; returns the manifest entries, sorted by file name."""
    return {
        file_name: FileEntry(sha256=store.put(data), size=len(data))
        for file_name, data in sorted(files.items())
    }


def write_manifest(store: ArtifactStore, signer: Signer, manifest: Manifest) -> SignedManifest:
    """Sign the manifest's canonical bytes and store them; returns digest and signature."""
    if manifest.key_id != signer.key_id:
        raise ValueError(f"manifest names key {manifest.key_id}, signer is {signer.key_id}")
    data = manifest.canonical_bytes()
    signature = signer.sign(data)
    return SignedManifest(manifest, store.put(data), signature, signer.key_id)


def profile_digest(profile: Mapping[str, Any]) -> str:
    """The sha256 of a reference profile's canonical JSON, as the manifest records it."""
    data = json.dumps(
        profile, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def verify_manifest(
    store: ArtifactStore,
    trusted: TrustedKeys,
    *,
    manifest_digest: str,
    signature: str,
    key_id: str,
    name: str,
    version: int,
) -> Manifest:
    """Fetch a version's manifest and check its digest, signature and identity."""
    label = f"{name}:{version}"
    refused = f"the artifact of {label} was refused"
    try:
        data = store.get(manifest_digest)
    except ArtifactTamperedError as error:
        raise ArtifactTamperedError(f"manifest of {label}: {error}; {refused}") from error
    except ArtifactError as error:
        raise ArtifactError(f"manifest of {label}: {error}") from error
    try:
        trusted.verify(data, signature, key_id)
    except SignatureError as error:
        raise SignatureError(f"manifest of {label}: {error}; {refused}") from error
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as error:
        raise ArtifactTamperedError(
            f"manifest of {label} is signed but does not parse ({error.error_count()} errors); "
            f"{refused}"
        ) from error
    if (manifest.name, manifest.version, manifest.key_id) != (name, version, key_id):
        raise ArtifactTamperedError(
            f"manifest of {label} describes {manifest.name}:{manifest.version} signed by "
            f"{manifest.key_id}; {refused}"
        )
    return manifest


def load_verified(
    store: ArtifactStore,
    trusted: TrustedKeys,
    *,
    manifest_digest: str,
    signature: str,
    key_id: str,
    name: str,
    version: int,
) -> VerifiedArtifact:
    """Fetch and verify a version's manifest and files; any mismatch refuses the artifact."""
    manifest = verify_manifest(
        store,
        trusted,
        manifest_digest=manifest_digest,
        signature=signature,
        key_id=key_id,
        name=name,
        version=version,
    )
    label = f"{name}:{version}"
    refused = f"the artifact of {label} was refused"
    files: dict[str, bytes] = {}
    for file_name, entry in manifest.files.items():
        try:
            blob = store.get(entry.sha256)
        except ArtifactTamperedError as error:
            raise ArtifactTamperedError(f"file {file_name} of {label}: {error}; {refused}") from (
                error
            )
        except ArtifactError as error:
            raise ArtifactError(f"file {file_name} of {label}: {error}") from error
        if len(blob) != entry.size:
            raise ArtifactTamperedError(
                f"file {file_name} of {label} is {len(blob)} bytes, the manifest says "
                f"{entry.size}; {refused}"
            )
        files[file_name] = blob
    return VerifiedArtifact(manifest, manifest_digest, files)

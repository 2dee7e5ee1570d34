import json
import os
from pathlib import Path

import pytest

from shipyard.errors import ArtifactError, ArtifactTamperedError, SignatureError
from shipyard.registry import ArtifactStore, Manifest, Signer, TrustedKeys
from shipyard.registry.artifacts import load_verified, sha256_hex, store_files, write_manifest


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load(tmp_path / "keys" / "signing.key", create=True)


def test_put_is_content_addressed_and_idempotent(store: ArtifactStore) -> None:
    digest = store.put(b"hello")
    assert digest == sha256_hex(b"hello")
    path = store.root / "sha256" / digest[:2] / digest
    assert path.read_bytes() == b"hello"
    assert store.put(b"hello") == digest
    assert store.get(digest) == b"hello"
    assert not list(path.parent.glob("*.tmp"))


def test_a_scratch_put_skips_the_sync_and_a_durable_put_of_it_syncs(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    digest = store.put(memoryview(b"between two stages"), durable=False)
    assert (store.get(digest), synced) == (b"between two stages", [])
    # The same bytes registered durably later: on disk before put returns, though no
    # new file is written.
    assert store.put(b"between two stages") == digest
    assert len(synced) == 1
    store.put(b"another blob")
    assert len(synced) == 2


def test_get_refuses_modified_bytes(store: ArtifactStore) -> None:
    digest = store.put(b"hello")
    store.path_of(digest).write_bytes(b"hellO")
    with pytest.raises(ArtifactTamperedError, match="modified"):
        store.get(digest)


def test_missing_blob_says_what_to_do(store: ArtifactStore) -> None:
    digest = sha256_hex(b"never stored")
    assert not store.path_of(digest).exists()
    with pytest.raises(ArtifactError, match="SHIPYARD_ARTIFACTS_DIR"):
        store.get(digest)


def test_bad_digest_is_rejected(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="not a sha256"):
        store.get("../../etc/passwd")


def _manifest(store: ArtifactStore, signer: Signer, files: dict[str, bytes]) -> Manifest:
    return Manifest(
        name="fraud",
        version=1,
        format="onnx",
        files=store_files(store, files),
        input_schema={"features": ["é"]},
        output_schema={},
        metrics={"f1": 0.5},
        created_at="2026-01-01T00:00:00+00:00",
        shipyard_version="0",
        key_id=signer.key_id,
    )


def test_canonical_bytes_are_deterministic(store: ArtifactStore, signer: Signer) -> None:
    manifest = _manifest(store, signer, {"b": b"2", "a": b"1"})
    data = manifest.canonical_bytes()
    assert data == Manifest.model_validate_json(data).canonical_bytes()
    assert b" " not in data
    assert json.loads(data) == json.loads(json.dumps(json.loads(data), sort_keys=True))
    assert "é".encode() in data


def test_round_trip_and_tampering(tmp_path: Path, store: ArtifactStore, signer: Signer) -> None:
    signed = write_manifest(store, signer, _manifest(store, signer, {"model.onnx": b"weights"}))
    trusted = TrustedKeys.load(tmp_path / "keys")

    def load(**changes: object) -> object:
        arguments: dict[str, object] = {
            "manifest_digest": signed.digest,
            "signature": signed.signature,
            "key_id": signed.key_id,
            "name": "fraud",
            "version": 1,
        }
        arguments.update(changes)
        return load_verified(store, trusted, **arguments)  # type: ignore[arg-type]

    artifact = load()
    assert artifact.files == {"model.onnx": b"weights"}  # type: ignore[attr-defined]
    with pytest.raises(ArtifactTamperedError, match="fraud:2"):
        load(version=2)
    with pytest.raises(SignatureError, match="refused"):
        load(signature=signer.sign(b"something else"))
    store.path_of(sha256_hex(b"weights")).write_bytes(b"weightz")
    with pytest.raises(ArtifactTamperedError, match=r"file model\.onnx of fraud:1.*refused"):
        load()

"""The artifact store with a secret key: blobs sealed at rest under their plaintext's address."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.errors import ArtifactError, ArtifactTamperedError, ShipyardError
from shipyard.registry import ArtifactStore, Registry
from shipyard.registry.artifacts import sha256_hex
from shipyard.registry.secrets import MAGIC, SecretKey, generate_secret_key
from shipyard.settings import Settings

from .conftest import register


def _key(folder: Path, name: str) -> SecretKey:
    return SecretKey.load(generate_secret_key(folder / "keys" / name).path)


@pytest.fixture
def key(tmp_path: Path) -> SecretKey:
    return _key(tmp_path, "a.secret")


@pytest.fixture
def other_key(tmp_path: Path) -> SecretKey:
    return _key(tmp_path, "b.secret")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def test_round_trip_keeps_the_plaintext_address(root: Path, key: SecretKey) -> None:
    store = ArtifactStore(root, key)
    digest = store.put(b"model bytes")
    assert digest == sha256_hex(b"model bytes")
    on_disk = store.path_of(digest).read_bytes()
    assert on_disk.startswith(MAGIC)
    assert b"model bytes" not in on_disk
    assert store.get(digest) == b"model bytes"
    assert store.put(b"model bytes") == digest
    assert store.path_of(digest).read_bytes() == on_disk  # idempotent: not sealed again
    assert list(store.digests()) == [digest]


def test_without_the_key_the_error_names_the_key_and_the_setting(
    root: Path, key: SecretKey
) -> None:
    digest = ArtifactStore(root, key).put(b"model bytes")
    with pytest.raises(ArtifactError) as caught:
        ArtifactStore(root).get(digest)
    error = caught.value
    assert type(error) is ArtifactError  # not tampered: it is fine, only locked
    assert key.key_id in str(error)
    assert "SHIPYARD_SECRET_KEY" in str(error)
    assert (error.exit_code, error.status_code) == (5, ShipyardError.status_code)


def test_wrong_key_names_both_ids(root: Path, key: SecretKey, other_key: SecretKey) -> None:
    digest = ArtifactStore(root, key).put(b"model bytes")
    with pytest.raises(ArtifactError, match=f"{key.key_id}.*{other_key.key_id}"):
        ArtifactStore(root, other_key).get(digest)


def test_tampered_ciphertext_or_a_swapped_blob_is_refused(root: Path, key: SecretKey) -> None:
    store = ArtifactStore(root, key)
    digest = store.put(b"model bytes")
    other = store.put(b"other bytes")
    path = store.path_of(digest)
    sealed = bytearray(path.read_bytes())
    sealed[-3] ^= 0x10
    path.write_bytes(bytes(sealed))
    with pytest.raises(ArtifactTamperedError, match="modified"):
        store.get(digest)
    # A genuine sealed blob under another blob's address decrypts but does not hash right.
    path.write_bytes(store.path_of(other).read_bytes())
    with pytest.raises(ArtifactTamperedError, match="hashes to"):
        store.get(digest)


def test_mixed_plain_and_sealed_store(root: Path, key: SecretKey) -> None:
    plain = ArtifactStore(root).put(b"written before the key")
    lookalike = ArtifactStore(root).put(MAGIC + b"\x01 plain bytes that look sealed")
    sealed = ArtifactStore(root, key).put(b"written with the key")
    keyed = ArtifactStore(root, key)
    assert keyed.get(plain) == b"written before the key"
    assert keyed.get(lookalike).endswith(b"look sealed")
    assert keyed.get(sealed) == b"written with the key"
    assert ArtifactStore(root).get(plain) == b"written before the key"
    assert ArtifactStore(root).get(lookalike).startswith(MAGIC)
    with pytest.raises(ArtifactError, match=key.key_id):
        ArtifactStore(root).get(sealed)


def test_rotation_encrypts_plain_blobs_and_re_encrypts_sealed_ones(
    root: Path, key: SecretKey, other_key: SecretKey
) -> None:
    plain = ArtifactStore(root).put(b"plain")
    sealed = ArtifactStore(root, key).put(b"sealed")
    done = ArtifactStore(root, key).reencrypt(other_key)
    assert (done.encrypted, done.reencrypted, done.skipped, done.failures) == (1, 1, 0, [])
    rotated = ArtifactStore(root, other_key)
    assert rotated.get(plain) == b"plain"
    assert rotated.get(sealed) == b"sealed"
    for digest in (plain, sealed):
        with pytest.raises(ArtifactError, match=f"encrypted with secret key {other_key.key_id}"):
            ArtifactStore(root, key).get(digest)  # the old key no longer reads them
    assert not list(root.rglob("*.tmp"))


def test_an_interrupted_rotation_finishes_when_run_again(
    root: Path, key: SecretKey, other_key: SecretKey
) -> None:
    old = ArtifactStore(root, key)
    digests = sorted(old.put(f"blob {i}".encode()) for i in range(5))
    seen: list[str] = []

    def interrupt_after_two(digest: str) -> None:
        seen.append(digest)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        old.reencrypt(other_key, on_blob=interrupt_after_two)
    again = old.reencrypt(other_key)
    assert (again.encrypted, again.reencrypted, again.skipped, again.failures) == (0, 3, 2, [])
    rotated = ArtifactStore(root, other_key)
    assert sorted(sha256_hex(rotated.get(digest)) for digest in digests) == digests
    third = old.reencrypt(other_key)
    assert (third.reencrypted, third.skipped) == (0, 5)


def test_rotation_leaves_blobs_it_cannot_read_and_says_why(
    root: Path, key: SecretKey, other_key: SecretKey, tmp_path: Path
) -> None:
    stranger = _key(tmp_path, "c.secret")
    foreign = ArtifactStore(root, stranger).put(b"under a third key")
    tampered = ArtifactStore(root).put(b"plain")
    ArtifactStore(root).path_of(tampered).write_bytes(b"plain, changed")
    before = ArtifactStore(root).path_of(foreign).read_bytes()
    done = ArtifactStore(root, key).reencrypt(other_key)
    assert (done.encrypted, done.reencrypted) == (0, 0)
    assert len(done.failures) == 2
    assert any(stranger.key_id in failure for failure in done.failures)
    assert any("modified" in failure for failure in done.failures)
    assert ArtifactStore(root).path_of(foreign).read_bytes() == before


@pytest.fixture
def keyed_settings(tmp_path: Path, key: SecretKey) -> Settings:
    return Settings(home=tmp_path / "home", secret_key=key.path)


@pytest.fixture
def keyed_registry(keyed_settings: Settings) -> Iterator[Registry]:
    with Registry.open(keyed_settings) as registry:
        yield registry


def test_a_registered_version_loads_with_the_key_and_is_still_signed(
    keyed_registry: Registry, keyed_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    info = register(keyed_registry, payload=b"secret model")
    artifact = keyed_registry.load_artifact("fraud:1")
    assert artifact.files == {"model.onnx": b"secret model"}
    assert artifact.manifest.key_id == info.key_id  # the signature was checked as before
    blobs = [path for path in keyed_settings.artifacts_path.rglob("*") if path.is_file()]
    assert blobs
    for blob in blobs:
        assert blob.read_bytes().startswith(MAGIC)  # manifest and reference profile too
    assert keyed_settings.secret_key is not None
    assert keyed_settings.secret_key.read_text().strip() not in caplog.text


def test_a_registered_version_without_the_key_cannot_be_loaded(
    keyed_registry: Registry, keyed_settings: Settings, key: SecretKey
) -> None:
    register(keyed_registry)
    plain = keyed_settings.model_copy(update={"secret_key": None})
    with Registry.open(plain) as registry, pytest.raises(ArtifactError) as caught:
        registry.load_artifact("fraud:1")
    assert "fraud:1" in str(caught.value)
    assert key.key_id in str(caught.value)
    assert "SHIPYARD_SECRET_KEY" in str(caught.value)


def _encrypted_home(home: Path, key: SecretKey) -> Settings:
    done = ArtifactStore(home / "artifacts").reencrypt(key)
    assert done.encrypted > 0
    assert done.failures == []
    return Settings(home=home, secret_key=key.path)


def test_an_encrypted_version_is_served_with_the_key_and_refused_without(
    model_home: Path, key: SecretKey
) -> None:
    from fastapi.testclient import TestClient

    from shipyard.examples import example_spec
    from shipyard.server.app import create_app

    settings = _encrypted_home(model_home, key)
    request = json.loads((example_spec("fraud").parent / "request.json").read_text())
    served = settings.model_copy(update={"serve_models": ["fraud"]})
    with TestClient(create_app(served)) as client:
        answer = client.post("/v1/models/fraud:predict", json=request)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == len(request["instances"])
    locked = settings.model_copy(update={"secret_key": None})
    with TestClient(create_app(locked)) as client:
        refused = client.post("/v1/models/fraud:predict", json=request)
    assert refused.status_code == ArtifactError.status_code, refused.text
    assert key.key_id in refused.json()["error"]
    assert "SHIPYARD_SECRET_KEY" in refused.json()["error"]

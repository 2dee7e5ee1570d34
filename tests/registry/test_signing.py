import stat
import threading
from pathlib import Path

import pytest

from shipyard.errors import ConfigurationError, SignatureError
from shipyard.registry import Signer, TrustedKeys, generate_keypair


def test_generate_writes_private_0600_and_public_next_to_it(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "signing.key"
    pair = generate_keypair(private)
    assert pair.private_path == private
    assert pair.public_path == tmp_path / "keys" / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert len(pair.key_id) == 16
    assert Signer.load(private).key_id == pair.key_id


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    private = tmp_path / "signing.key"
    first = generate_keypair(private)
    before = private.read_bytes()
    with pytest.raises(ConfigurationError, match="--force"):
        generate_keypair(private)
    assert private.read_bytes() == before
    second = generate_keypair(private, force=True)
    assert second.key_id != first.key_id
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_load_missing_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="shipyard keys generate"):
        Signer.load(tmp_path / "nope.key")
    created = Signer.load(tmp_path / "new" / "signing.key", create=True)
    assert (tmp_path / "new" / "signing.pub").exists()
    assert Signer.load(tmp_path / "new" / "signing.key").key_id == created.key_id


def test_load_malformed_key(tmp_path: Path) -> None:
    private = tmp_path / "bad.key"
    private.write_text("not a key\n")
    with pytest.raises(ConfigurationError, match=r"bad\.key"):
        Signer.load(private)


def test_sign_and_verify(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "signing.key")
    signer = Signer.load(pair.private_path)
    trusted = TrustedKeys.load(tmp_path)
    signature = signer.sign(b"manifest")
    assert signer.key_id == pair.key_id
    trusted.verify(b"manifest", signature, signer.key_id)
    with pytest.raises(SignatureError, match="does not match"):
        trusted.verify(b"manifest!", signature, signer.key_id)
    with pytest.raises(SignatureError, match="does not match"):
        trusted.verify(b"manifest", "not base64!!", signer.key_id)
    with pytest.raises(SignatureError, match="no signature"):
        trusted.verify(b"manifest", "", signer.key_id)


def test_unknown_key_is_not_trusted(tmp_path: Path) -> None:
    other = Signer.load(tmp_path / "other" / "signing.key", create=True)
    (tmp_path / "trusted").mkdir()
    trusted = TrustedKeys.load(tmp_path / "trusted")
    with pytest.raises(SignatureError, match=f"key {other.key_id} which is not trusted") as raised:
        trusted.verify(b"x", other.sign(b"x"), other.key_id)
    assert str(tmp_path / "trusted") in str(raised.value)


def test_malformed_public_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.pub").write_text("zz")
    with pytest.raises(ConfigurationError, match=r"broken\.pub"):
        TrustedKeys.load(tmp_path)


def test_missing_trusted_folder_trusts_nothing(tmp_path: Path) -> None:
    signer = Signer.load(tmp_path / "signing.key", create=True)
    trusted = TrustedKeys.load(tmp_path / "absent")
    with pytest.raises(SignatureError, match="not trusted"):
        trusted.verify(b"x", signer.sign(b"x"), signer.key_id)


def test_processes_creating_the_key_at_once_all_sign_with_the_same_one(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "signing.key"
    start = threading.Barrier(6)
    key_ids: list[str] = []

    def load() -> None:
        start.wait(timeout=10)
        key_ids.append(Signer.load(private, create=True).key_id)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(key_ids) == 6
    assert set(key_ids) == {Signer.load(private).key_id}
    assert sorted(p.name for p in private.parent.iterdir()) == ["signing.key", "signing.pub"]

import logging
import stat
from pathlib import Path

import pytest

from shipyard.errors import ArtifactError, ArtifactTamperedError, ConfigurationError
from shipyard.registry.secrets import (
    HEADER_BYTES,
    MAGIC,
    SecretKey,
    generate_secret_key,
    sealed_key_id,
    secret_key_id,
)
from shipyard.settings import Settings


def test_generate_writes_an_owner_only_key_and_keeps_an_existing_one(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "artifacts.secret"
    made = generate_secret_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = bytes.fromhex(path.read_text().strip())
    assert len(raw) == 32
    assert made.key_id == secret_key_id(raw) == SecretKey.load(path).key_id
    assert len(made.key_id) == 16
    with pytest.raises(ConfigurationError, match="--force"):
        generate_secret_key(path)
    assert bytes.fromhex(path.read_text().strip()) == raw
    replaced = generate_secret_key(path, force=True)
    assert replaced.key_id != made.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_seal_and_open_round_trip(tmp_path: Path) -> None:
    key = SecretKey.load(generate_secret_key(tmp_path / "k").path)
    sealed = key.seal(b"model bytes")
    assert sealed.startswith(MAGIC)
    assert b"model bytes" not in sealed
    assert sealed_key_id(sealed, "blob") == key.key_id
    assert key.open(sealed, "blob") == b"model bytes"
    assert key.seal(b"model bytes") != sealed  # a fresh nonce every time


def test_wrong_key_names_both_key_ids(tmp_path: Path) -> None:
    first = SecretKey.load(generate_secret_key(tmp_path / "a").path)
    second = SecretKey.load(generate_secret_key(tmp_path / "b").path)
    with pytest.raises(ArtifactError) as caught:
        second.open(first.seal(b"x"), "blob")
    assert not isinstance(caught.value, ArtifactTamperedError)
    assert first.key_id in str(caught.value)
    assert second.key_id in str(caught.value)
    assert "SHIPYARD_SECRET_KEY" in str(caught.value)


def test_modified_ciphertext_or_header_is_tampered(tmp_path: Path) -> None:
    key = SecretKey.load(generate_secret_key(tmp_path / "k").path)
    sealed = bytearray(key.seal(b"model bytes"))
    sealed[-1] ^= 1
    with pytest.raises(ArtifactTamperedError, match="modified"):
        key.open(bytes(sealed), "blob")
    with pytest.raises(ArtifactTamperedError, match="cut-short"):
        key.open(bytes(sealed[: HEADER_BYTES - 1]), "blob")
    newer = bytearray(key.seal(b"x"))
    newer[len(MAGIC)] = 9
    with pytest.raises(ArtifactError, match="format 9"):
        key.open(bytes(newer), "blob")


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "no secret key at"), ("zz", "not a secret key"), ("ab" * 16, "not a secret key")],
)
def test_bad_key_files_say_how_to_make_one(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "k"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError, match=problem) as caught:
        SecretKey.load(path)
    assert "keys generate --secret" in str(caught.value)
    if content is not None:
        assert content not in str(caught.value)


def test_the_key_is_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "k"
    made = generate_secret_key(path)
    secret = path.read_text().strip()
    key = SecretKey.load(path)
    caplog.set_level(logging.DEBUG)
    key.open(key.seal(b"x"), "blob")
    settings = Settings(home=tmp_path / "home", secret_key=path)
    shown = [
        repr(key),
        str(key),
        repr(settings),
        settings.model_dump_json(),
        str(settings.to_env()),
        caplog.text,
    ]
    for text in shown:
        assert secret not in text
    assert made.key_id in repr(key)
    assert settings.to_env()["SHIPYARD_SECRET_KEY"] == str(path)


def test_an_empty_setting_means_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_SECRET_KEY", "")
    assert Settings(home=tmp_path).secret_key is None
    monkeypatch.setenv("SHIPYARD_SECRET_KEY", "~/keys/artifacts.secret")
    assert Settings(home=tmp_path).secret_key == Path("~/keys/artifacts.secret").expanduser()

from pathlib import Path

import pytest

from shipyard.registry.secrets import SecretKey

from .conftest import Result


def test_generate_refuses_to_overwrite_without_force(cli, tmp_path: Path) -> None:
    key = tmp_path / "k" / "signing.key"
    first = cli("keys", "generate", "--path", str(key))
    assert first.code == 0, first.err
    assert "key id:" in first.out
    assert (key.stat().st_mode & 0o777) == 0o600
    assert key.with_suffix(".pub").exists()
    before = key.read_bytes()
    again = cli("keys", "generate", "--path", str(key))
    assert again.code == 2
    assert "--force" in again.err
    assert key.read_bytes() == before
    forced = cli("keys", "generate", "--path", str(key), "--force")
    assert forced.code == 0
    assert key.read_bytes() != before


def test_default_path_is_under_home(cli, home: Path) -> None:
    assert cli("keys", "generate").code == 0
    assert (home / "keys" / "signing.key").exists()


def test_generate_secret_prints_its_id_and_the_setting_never_the_key(cli, tmp_path: Path) -> None:
    key = tmp_path / "k" / "artifacts.secret"
    made = cli("keys", "generate", "--secret", str(key))
    assert made.code == 0, made.err
    assert (key.stat().st_mode & 0o777) == 0o600
    secret = key.read_text().strip()
    assert secret not in made.out + made.err
    assert f"key id:     {SecretKey.load(key).key_id}" in made.out
    assert f"SHIPYARD_SECRET_KEY={key.resolve()}" in " ".join(made.out.split())
    again = cli("keys", "generate", "--secret", str(key))
    assert again.code == 2
    assert "--force" in again.err
    assert key.read_text().strip() == secret
    assert cli("keys", "generate", "--secret", str(key), "--force").code == 0
    assert key.read_text().strip() != secret
    both = cli("keys", "generate", "--secret", str(key), "--path", str(tmp_path / "s.key"))
    assert both.code == 2
    assert "give one of them" in both.err


def _predict(model_cli, tmp_path: Path) -> Result:
    data = tmp_path / "new.csv"
    assert model_cli("data", "generate", "fraud", "--rows", "50", "-o", str(data)).code == 0
    return model_cli("predict", "fraud:1", "--input", str(data), "-o", str(tmp_path / "o.csv"))


def test_rotate_encrypts_a_model_home_which_then_needs_the_key(
    model_cli, home_with_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first.secret", tmp_path / "second.secret"
    for key in (first, second):
        assert model_cli("keys", "generate", "--secret", str(key)).code == 0
    first_id, second_id = SecretKey.load(first).key_id, SecretKey.load(second).key_id
    blobs = [p for p in (home_with_model / "artifacts").rglob("*") if p.is_file()]

    rotated = model_cli("keys", "rotate", "--secret", str(first))
    assert rotated.code == 0, rotated.err
    out = " ".join(rotated.out.split())
    assert f"encrypted {len(blobs)} plain blobs, re-encrypted 0, skipped 0" in out
    assert f"SHIPYARD_SECRET_KEY={first.resolve()}" in out

    locked = _predict(model_cli, tmp_path)
    assert locked.code == 5
    assert first_id in locked.err
    assert "SHIPYARD_SECRET_KEY" in locked.err
    assert "Traceback" not in locked.err

    monkeypatch.setenv("SHIPYARD_SECRET_KEY", str(first))
    assert _predict(model_cli, tmp_path).code == 0
    again = model_cli("keys", "rotate", "--secret", str(second))  # old key from the setting
    assert again.code == 0, again.err
    assert f"re-encrypted {len(blobs)}, skipped 0" in " ".join(again.out.split())
    wrong = _predict(model_cli, tmp_path)  # the setting still names the old key
    assert wrong.code == 5
    assert first_id in wrong.err
    assert second_id in wrong.err
    monkeypatch.setenv("SHIPYARD_SECRET_KEY", str(second))
    assert _predict(model_cli, tmp_path).code == 0
    for blob in blobs:
        assert first.read_text().strip() not in blob.read_text(errors="replace")


def test_rotate_without_the_old_key_says_which_blobs_it_left(
    model_cli, home_with_model: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.secret", tmp_path / "second.secret"
    for key in (first, second):
        assert model_cli("keys", "generate", "--secret", str(key)).code == 0
    assert model_cli("keys", "rotate", "--secret", str(first)).code == 0
    left = model_cli("keys", "rotate", "--secret", str(second))  # no --old, no setting
    assert left.code == 5
    assert SecretKey.load(first).key_id in left.err
    assert "--old" in left.err
    done = model_cli("keys", "rotate", "--secret", str(second), "--old", str(first))
    assert done.code == 0, done.err
    missing = model_cli("keys", "rotate", "--secret", str(tmp_path / "nope.secret"))
    assert missing.code == 2
    assert "keys generate --secret" in missing.err

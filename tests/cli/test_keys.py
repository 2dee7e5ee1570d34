from pathlib import Path


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

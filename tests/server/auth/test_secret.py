from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from shipyard.errors import ConfigurationError
from shipyard.server.auth.secret import load_or_create_secret, token_secret
from shipyard.settings import Settings


def test_workers_starting_at_once_share_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "home" / "auth.secret"
    start = threading.Barrier(8)
    secrets: list[bytes] = []

    def load() -> None:
        start.wait(timeout=10)
        secrets.append(load_or_create_secret(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(secrets) == 8
    assert len(set(secrets)) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_damaged_secret_file_says_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "auth.secret"
    path.write_text("not hex\n")
    with pytest.raises(ConfigurationError, match="cannot read the token-signing secret"):
        load_or_create_secret(path)
    path.write_text("ab" * 16 + "\n")
    with pytest.raises(ConfigurationError, match="shorter than 32 bytes; delete it"):
        load_or_create_secret(path)


def test_a_secret_that_cannot_be_created_names_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigurationError, match=r"cannot create .* set SHIPYARD_AUTH_SECRET"):
        load_or_create_secret(tmp_path / "a-file" / "auth.secret")


def test_the_configured_secret_is_used_as_given(home: Path) -> None:
    settings = Settings(home=home, auth_secret=SecretStr("é" * 20))
    assert token_secret(settings) == ("é" * 20).encode("utf-8")
    assert not settings.auth_secret_path.exists()

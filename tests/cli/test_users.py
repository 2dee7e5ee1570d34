from __future__ import annotations

import io

import pytest

from shipyard.registry import Registry, Role, Users
from shipyard.settings import Settings


def add(cli, monkeypatch: pytest.MonkeyPatch, username: str, password: str, *args: str):
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return cli("users", "add", username, "--password-stdin", *args)


def test_add_and_list_show_role_but_never_the_hash(cli, monkeypatch, home) -> None:
    added = add(cli, monkeypatch, "ada", "admin password", "--role", "admin")
    assert added.code == 0, added.err
    assert "added user ada with role admin" in added.out
    assert add(cli, monkeypatch, "vera", "viewer password").code == 0

    listed = cli("users", "list")
    assert listed.code == 0, listed.err
    assert "ada" in listed.out
    assert "admin" in listed.out
    assert "vera" in listed.out
    assert "viewer" in listed.out  # the default role
    assert "argon2" not in listed.out
    assert "admin password" not in listed.out

    with Registry.open(Settings(home=home)) as registry:
        principal = Users(registry).authenticate("ada", "admin password")
    assert principal.role is Role.ADMIN


def test_password_line_ending_is_not_part_of_the_password(cli, monkeypatch, home) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("windows line\r\nignored"))
    assert cli("users", "add", "win", "--password-stdin").code == 0
    with Registry.open(Settings(home=home)) as registry:
        assert Users(registry).authenticate("win", "windows line").name == "win"


def test_no_password_flag_and_no_terminal(cli, monkeypatch) -> None:
    assert cli("users", "add", "ada", "--password", "admin password").code == 2
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    result = cli("users", "add", "ada")
    assert result.code == 2
    assert "--password-stdin" in result.err


def test_errors_exit_with_their_codes(cli, monkeypatch) -> None:
    assert add(cli, monkeypatch, "ada", "admin password").code == 0
    duplicate = add(cli, monkeypatch, "ada", "other password")
    assert duplicate.code == 4
    assert "already exists" in duplicate.err
    short = add(cli, monkeypatch, "bob", "short")
    assert short.code == 2
    assert "at least 8 characters" in short.err
    missing = cli("users", "remove", "ghost")
    assert missing.code == 3
    assert "no user named 'ghost'" in missing.err
    assert cli("users", "add", "x", "--role", "root", "--password-stdin").code == 2


def test_remove(cli, monkeypatch) -> None:
    assert add(cli, monkeypatch, "ada", "admin password").code == 0
    removed = cli("users", "remove", "ada")
    assert removed.code == 0, removed.err
    assert "ada" not in cli("users", "list").out


def test_api_key_create_list_revoke(cli, home) -> None:
    created = cli("users", "api-key", "create", "scorer", "--role", "operator")
    assert created.code == 0, created.err
    secret = created.out.strip()
    assert secret.startswith("sk_")
    assert "only time" in created.err

    listed = cli("users", "api-key", "list")
    assert listed.code == 0
    assert "scorer" in listed.out
    assert secret[:8] in listed.out
    assert secret not in listed.out
    assert "active" in listed.out

    with Registry.open(Settings(home=home)) as registry:
        assert Users(registry).verify_api_key(secret).role is Role.OPERATOR

    assert cli("users", "api-key", "revoke", "scorer").code == 0
    assert "revoked" in cli("users", "api-key", "list").out
    assert cli("users", "api-key", "revoke", "scorer").code == 4
    assert cli("users", "api-key", "revoke", "ghost").code == 3
    assert cli("users", "api-key", "create", "scorer").code == 4

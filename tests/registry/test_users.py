from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from shipyard.errors import AuthenticationError, ConflictError, InvalidInputError, NotFoundError
from shipyard.registry import Principal, Registry, Role, Users, role_allows
from shipyard.registry.tables import ApiKeyRow, UserRow
from shipyard.registry.users import hash_api_key

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def users(registry: Registry) -> Users:
    return Users(registry, hasher=FAST)


def test_add_list_remove(users: Users) -> None:
    users.add("bob", "correct horse", Role.OPERATOR)
    users.add("alice", "battery staple", "admin")
    listed = users.list()
    assert [(u.username, u.role) for u in listed] == [("alice", Role.ADMIN), ("bob", "operator")]
    assert listed[0].created_at.tzinfo is not None
    users.remove("bob")
    assert [u.username for u in users.list()] == ["alice"]


def test_remove_unknown_user_is_not_found(users: Users) -> None:
    with pytest.raises(NotFoundError, match="no user named 'ghost'"):
        users.remove("ghost")


def test_duplicate_username_is_a_conflict(users: Users) -> None:
    users.add("bob", "correct horse", Role.VIEWER)
    with pytest.raises(ConflictError, match="already exists"):
        users.add("bob", "another password", Role.ADMIN)
    assert [u.role for u in users.list()] == [Role.VIEWER]


@pytest.mark.parametrize(
    ("username", "password", "role", "message"),
    [
        ("bob", "short", "viewer", "at least 8 characters"),
        ("bob", "", "viewer", "at least 8 characters"),
        ("bob", "long enough", "boss", "'boss' is not a role"),
        ("bad name!", "long enough", "viewer", "not a valid username"),
        ("", "long enough", "viewer", "not a valid username"),
    ],
)
def test_bad_input_is_refused(
    users: Users, username: str, password: str, role: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        users.add(username, password, role)
    assert users.list() == []


def test_only_an_argon2_hash_is_stored(users: Users, registry: Registry) -> None:
    users.add("bob", "correct horse", Role.VIEWER)
    with registry.transaction() as session:
        stored = session.scalar(select(UserRow.password_hash))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


def test_authenticate(users: Users) -> None:
    users.add("bob", "correct horse", Role.OPERATOR)
    assert users.authenticate("bob", "correct horse") == Principal("bob", Role.OPERATOR, "user")


def test_wrong_password_and_unknown_user_look_the_same(users: Users) -> None:
    users.add("bob", "correct horse", Role.OPERATOR)
    with pytest.raises(AuthenticationError) as wrong:
        users.authenticate("bob", "wrong horse")
    with pytest.raises(AuthenticationError) as unknown:
        users.authenticate("nobody", "correct horse")
    assert str(wrong.value) == str(unknown.value) == "wrong username or password"
    assert wrong.value.status_code == 401
    assert wrong.value.exit_code == 2


def test_outdated_hash_is_upgraded_at_sign_in(registry: Registry) -> None:
    Users(registry, hasher=FAST).add("bob", "correct horse", Role.VIEWER)
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    assert Users(registry, hasher=stronger).authenticate("bob", "correct horse").name == "bob"
    with registry.transaction() as session:
        stored = session.scalar(select(UserRow.password_hash))
    assert stored is not None
    assert not stronger.check_needs_rehash(stored)
    assert Users(registry, hasher=stronger).authenticate("bob", "correct horse").name == "bob"


def test_api_key_create_verify_revoke(users: Users, registry: Registry) -> None:
    key, secret = users.create_api_key("scorer", Role.OPERATOR)
    assert secret.startswith("sk_")
    assert len(secret) == 3 + 43  # 32 bytes, urlsafe base64 without padding
    assert key.prefix == secret[:8]
    assert not key.revoked
    assert users.verify_api_key(secret) == Principal("scorer", Role.OPERATOR, "api_key")
    with registry.transaction() as session:
        row = session.scalar(select(ApiKeyRow))
    assert row is not None
    assert row.key_hash == hash_api_key(secret)
    assert secret not in (row.key_hash, row.prefix)

    revoked = users.revoke_api_key("scorer")
    assert revoked.revoked
    with pytest.raises(AuthenticationError, match="'scorer' was revoked"):
        users.verify_api_key(secret)
    assert [(k.name, k.revoked) for k in users.list_api_keys()] == [("scorer", True)]
    with pytest.raises(ConflictError, match="already revoked"):
        users.revoke_api_key("scorer")


def test_api_key_secrets_differ_and_names_are_unique(users: Users) -> None:
    _, first = users.create_api_key("a", Role.VIEWER)
    _, second = users.create_api_key("b", Role.VIEWER)
    assert first != second
    with pytest.raises(ConflictError, match="already exists"):
        users.create_api_key("a", Role.ADMIN)


def test_unknown_and_malformed_api_keys_are_refused(users: Users) -> None:
    with pytest.raises(AuthenticationError, match="unknown API key"):
        users.verify_api_key("sk_" + "A" * 43)
    with pytest.raises(AuthenticationError, match="malformed API key"):
        users.verify_api_key("not-a-key")
    with pytest.raises(NotFoundError, match="no API key named 'ghost'"):
        users.revoke_api_key("ghost")


def test_role_order() -> None:
    assert sorted(Role, key=lambda role: role.rank) == [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
    assert role_allows(Role.ADMIN, Role.OPERATOR)
    assert role_allows(Role.OPERATOR, Role.OPERATOR)
    assert not role_allows(Role.VIEWER, Role.OPERATOR)
    assert not role_allows(Role.OPERATOR, Role.ADMIN)
    assert Role.parse("admin") is Role.ADMIN
    with pytest.raises(InvalidInputError, match="viewer, operator, admin"):
        Role.parse("root")

"""Who may use a Shipyard server: users with passwords, services with API keys, and roles.

Roles are ordered ``viewer < operator < admin``; a higher role may do whatever a lower one may.
Passwords are stored as argon2id hashes (slow on purpose; people pick guessable passwords).
API keys are 32 random bytes, so a fast SHA-256 is enough and lets a key be found by its hash;
the secret itself is shown once, at creation, and never stored.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shipyard.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from shipyard.registry.reference import check_name
from shipyard.registry.registry import Registry
from shipyard.registry.tables import ApiKeyRow, UserRow, utcnow

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
API_KEY_PREFIX = "sk_"
API_KEY_BYTES = 32
SHOWN_PREFIX_LENGTH = 8
WRONG_CREDENTIALS = "wrong username or password"


class Role(StrEnum):
    """What a principal may do; see ``rank`` for the order."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 for viewer, 1 for operator, 2 for admin."""
        return list(Role).index(self)

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        """The role named ``value``; ``InvalidInputError`` naming the choices if none is."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(role.value for role in cls)
            raise InvalidInputError(f"{value!r} is not a role; use one of {choices}") from None


def role_allows(have: Role, need: Role) -> bool:
    """Whether a principal with role ``have`` may do what needs role ``need``."""
    return have.rank >= need.rank


@dataclass(frozen=True)
class User:
    """A user as listings show it; the password hash never leaves this module."""

    username: str
    role: Role
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An API key as listings show it: its name and the first characters of its secret."""

    name: str
    prefix: str
    role: Role
    created_at: datetime
    revoked: bool


@dataclass(frozen=True)
class Principal:
    """Who made a request, once their credentials checked out."""

    name: str
    role: Role
    kind: Literal["user", "api_key"]


def hash_api_key(secret: str) -> str:
    """The SHA-256 hex digest under which an API key's secret is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Users:
    """Users and API keys in the registry database."""

    def __init__(self, registry: Registry, *, hasher: PasswordHasher | None = None) -> None:
        self._registry = registry
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    # -- users ----------------------------------------------------------------------------

    def add(self, username: str, password: str, role: Role | str) -> User:
        """Create a user; ``ConflictError`` if the username is taken."""
        check_name(username, "username")
        checked_role = Role.parse(role)
        _check_password(password)
        # Hash before the transaction: argon2 takes tens of milliseconds, a lock should not.
        password_hash = self._hasher.hash(password)
        taken = ConflictError(
            f"a user named {username!r} already exists; remove it first with "
            f"`shipyard users remove {username}` or pick another name"
        )
        row = UserRow(
            username=username, password_hash=password_hash, role=checked_role, created_at=utcnow()
        )
        try:
            with self._registry.transaction(write=True) as session:
                if _find_user(session, username) is not None:
                    raise taken
                session.add(row)
        except IntegrityError as error:  # a concurrent add of the same name won
            raise taken from error
        return _user(row)

    def remove(self, username: str) -> None:
        """Delete a user; ``NotFoundError`` if there is none by that name."""
        with self._registry.transaction(write=True) as session:
            row = _find_user(session, username)
            if row is None:
                raise NotFoundError(
                    f"no user named {username!r}; list users with `shipyard users list`"
                )
            session.delete(row)

    def list(self) -> builtins.list[User]:
        """Every user, by username."""
        with self._registry.transaction() as session:
            rows = session.scalars(select(UserRow).order_by(UserRow.username))
            return [_user(row) for row in rows]

    def authenticate(self, username: str, password: str) -> Principal:
        """The user's principal if the password is right; ``AuthenticationError`` if not.

        An unknown username costs one argon2 verification too, and gets the same message, so
        neither the answer nor its timing tells which usernames exist.
        """
        with self._registry.transaction() as session:
            row = _find_user(session, username)
            found = (row.password_hash, Role.parse(row.role)) if row is not None else None
        if found is None:
            self._verify(self._dummy(), password)
            raise AuthenticationError(WRONG_CREDENTIALS)
        password_hash, role = found
        if not self._verify(password_hash, password):
            raise AuthenticationError(WRONG_CREDENTIALS)
        if self._hasher.check_needs_rehash(password_hash):
            self._rehash(username, password_hash, password)
        return Principal(username, role, "user")

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        return self._dummy_hash

    def _rehash(self, username: str, old_hash: str, password: str) -> None:
        # The hasher's parameters grew since this hash was made; upgrade it while we know the
        # password. Only if nobody changed the hash meanwhile.
        new_hash = self._hasher.hash(password)
        with self._registry.transaction(write=True) as session:
            row = _find_user(session, username)
            if row is not None and row.password_hash == old_hash:
                row.password_hash = new_hash

    # -- API keys -------------------------------------------------------------------------

    def create_api_key(self, name: str, role: Role | str) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not stored and cannot be shown again."""
        check_name(name, "API key name")
        checked_role = Role.parse(role)
        raw = secrets.token_bytes(API_KEY_BYTES)
        secret = API_KEY_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        taken = ConflictError(
            f"an API key named {name!r} already exists (revoked keys keep their name); "
            "pick another name"
        )
        row = ApiKeyRow(
            name=name,
            key_hash=hash_api_key(secret),
            prefix=secret[:SHOWN_PREFIX_LENGTH],
            role=checked_role,
            created_at=utcnow(),
            revoked_at=None,
        )
        try:
            with self._registry.transaction(write=True) as session:
                if session.scalar(select(ApiKeyRow.id).where(ApiKeyRow.name == name)) is not None:
                    raise taken
                session.add(row)
        except IntegrityError as error:
            raise taken from error
        return _api_key(row), secret

    def list_api_keys(self) -> builtins.list[ApiKey]:
        """Every API key, revoked ones included, by name."""
        with self._registry.transaction() as session:
            rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name))
            return [_api_key(row) for row in rows]

    def revoke_api_key(self, name: str) -> ApiKey:
        """Revoke a key for good; ``NotFoundError`` if unknown, ``ConflictError`` if revoked."""
        with self._registry.transaction(write=True) as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name))
            if row is None:
                raise NotFoundError(
                    f"no API key named {name!r}; list keys with `shipyard users api-key list`"
                )
            if row.revoked_at is not None:
                raise ConflictError(
                    f"API key {name!r} was already revoked at {row.revoked_at:%Y-%m-%d %H:%M} UTC"
                )
            row.revoked_at = utcnow()
            return _api_key(row)

    def verify_api_key(self, secret: str) -> Principal:
        """The key's principal; ``AuthenticationError`` saying why if it is unknown or revoked."""
        if not secret.startswith(API_KEY_PREFIX):
            raise AuthenticationError(f"malformed API key; keys start with {API_KEY_PREFIX!r}")
        with self._registry.transaction() as session:
            row = session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_api_key(secret))
            )
            if row is None:
                raise AuthenticationError(
                    "unknown API key; create one with `shipyard users api-key create`"
                )
            if row.revoked_at is not None:
                raise AuthenticationError(
                    f"API key {row.name!r} was revoked at {row.revoked_at:%Y-%m-%d %H:%M} UTC; "
                    "ask an admin for a new one"
                )
            return Principal(row.name, Role.parse(row.role), "api_key")


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(
            f"the password is too short; use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInputError(
            f"the password is too long; use at most {MAX_PASSWORD_LENGTH} characters"
        )


def _find_user(session: Session, username: str) -> UserRow | None:
    return session.scalar(select(UserRow).where(UserRow.username == username))


def _user(row: UserRow) -> User:
    return User(row.username, Role.parse(row.role), row.created_at)


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        row.name, row.prefix, Role.parse(row.role), row.created_at, row.revoked_at is not None
    )

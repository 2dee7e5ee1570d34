"""Access tokens: short-lived HS256 JWTs naming a principal and its role."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
from pydantic import BaseModel

from shipyard.errors import AuthenticationError, ConfigurationError
from shipyard.registry.users import Principal, Role
from shipyard.server.auth.secret import SECRET_BYTES, token_secret
from shipyard.settings import Settings

TOKEN_URL = "/v1/auth/token"  # noqa: S105 - a route, not a password
ISSUER = "shipyard"
ALGORITHM = "HS256"
CLAIMS = ["sub", "role", "kind", "iat", "exp", "iss"]
EXPIRED = f"token expired; request a new one at POST {TOKEN_URL}"


class TokenResponse(BaseModel):
    """What ``POST /v1/auth/token`` answers (RFC 6749 section 5.1)."""

    access_token: str
    token_type: str
    expires_in: int


class TokenIssuer:
    """Signs and checks access tokens with one HS256 secret."""

    def __init__(
        self, secret: bytes, ttl_seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < SECRET_BYTES:
            raise ConfigurationError(
                f"the token-signing secret has {len(secret)} bytes; HS256 needs at least "
                f"{SECRET_BYTES}. Set SHIPYARD_AUTH_SECRET to e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`, or unset it"
            )
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._clock = clock  # when tokens are issued; tests back-date with it

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenIssuer:
        """``auth_secret`` if set, else the secret file under the home (made on first use)."""
        return cls(token_secret(settings), settings.token_ttl_seconds)

    def issue(self, principal: Principal) -> tuple[str, int]:
        """A signed token for ``principal`` and how many seconds it stays valid."""
        now = int(self._clock())
        claims = {
            "sub": principal.name,
            "role": principal.role.value,
            "kind": principal.kind,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "iss": ISSUER,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), self.ttl_seconds

    def verify(self, token: str) -> Principal:
        """The principal a token names; ``AuthenticationError`` if expired, altered or foreign."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError(EXPIRED) from None
        except jwt.InvalidTokenError as error:
            raise AuthenticationError(f"invalid token: {error}") from None
        kind = claims["kind"]
        try:
            role = Role(claims["role"])
        except ValueError:
            raise AuthenticationError(f"invalid token: unknown role {claims['role']!r}") from None
        if kind not in ("user", "api_key") or not isinstance(claims["sub"], str):
            raise AuthenticationError("invalid token: malformed claims")
        return Principal(claims["sub"], role, kind)

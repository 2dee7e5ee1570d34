"""From a request's credentials (a token or an API key) to a ``Principal`` allowed a role."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from shipyard.errors import AuthenticationError, PermissionDeniedError
from shipyard.registry.registry import Registry
from shipyard.registry.users import (
    API_KEY_PREFIX,
    Principal,
    Role,
    Users,
    hash_api_key,
    role_allows,
)
from shipyard.server.auth.tokens import TOKEN_URL, TokenIssuer, TokenResponse
from shipyard.settings import Settings

MISSING = (
    f"missing credentials; send Authorization: Bearer <token from POST {TOKEN_URL}> "
    "or X-API-Key: <API key>"
)
CACHE_LIMIT = 10_000


class Authenticator:
    """Turns a request's credentials into a ``Principal`` and checks its role."""

    def __init__(
        self,
        users: Users,
        issuer: TokenIssuer,
        *,
        protect_inference: bool = False,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self.issuer = issuer
        self.protect_inference = protect_inference
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._api_keys: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry) -> Authenticator:
        """Users of ``registry``, the configured token secret and ``protect_inference``."""
        return cls(
            Users(registry),
            TokenIssuer.from_settings(settings),
            protect_inference=settings.protect_inference,
        )

    async def principal(
        self, request: Request, bearer: str | None, api_key: str | None, need: Role
    ) -> Principal:
        """Who sent ``request`` (``AuthenticationError`` if unknown), if allowed ``need``."""
        credential = bearer or api_key
        if not credential:
            scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
            if scheme:
                raise AuthenticationError(
                    f"unsupported Authorization scheme {scheme[:20]!r}; send "
                    f"Authorization: Bearer <token from POST {TOKEN_URL}> or X-API-Key: <API key>"
                )
            raise AuthenticationError(MISSING)
        if credential.startswith(API_KEY_PREFIX):
            principal = await self._verify_api_key(credential)
        else:
            principal = self.issuer.verify(credential)
        if not role_allows(principal.role, need):
            raise PermissionDeniedError(
                f"role {principal.role.value} cannot {request.method} {request.url.path}; "
                f"needs {need.value}"
            )
        request.state.principal = principal
        return principal

    async def _verify_api_key(self, secret: str) -> Principal:
        digest = hash_api_key(secret)
        now = self._clock()
        cached = self._api_keys.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await run_in_threadpool(self.users.verify_api_key, secret)
        if len(self._api_keys) >= CACHE_LIMIT:
            self._api_keys.clear()
        self._api_keys[digest] = (principal, now + self.cache_seconds)
        return principal

    def issue_token(self, username: str, password: str) -> TokenResponse:
        """The password flow: check the password (argon2, slow on purpose), sign a token."""
        principal = self.users.authenticate(username, password)
        token, expires_in = self.issuer.issue(principal)
        return TokenResponse(access_token=token, token_type="bearer", expires_in=expires_in)  # noqa: S106

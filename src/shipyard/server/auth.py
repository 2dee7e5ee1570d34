"""Who is calling, and may they: short-lived JWTs from the password flow, API keys, roles.

Credentials come as ``Authorization: Bearer <token or sk_ key>`` or ``X-API-Key: <sk_ key>``.
A JWT (HS256, claims ``sub role kind iat exp iss``) is checked without touching the database,
so a removed user or a changed role takes effect when their token expires
(``token_ttl_seconds``, default 15 minutes). An API key is looked up by its SHA-256 and the
answer is cached for ``cache_seconds`` (default 5), so a revoked key keeps working for up to
that long on a server that saw it just before.

Wiring::

    install(app)                                 # error handlers: 401 with WWW-Authenticate, 403
    app.include_router(router)                   # POST /v1/auth/token
    attach(app, Authenticator.from_settings(settings, registry))   # e.g. in the lifespan

    @app.post("/admin-thing", dependencies=[Depends(require(Role.ADMIN))])
    @app.post("/v2/models/{name}/infer", dependencies=[Depends(inference)])

``require`` and ``inference`` find the authenticator on the app at request time, so routers
can be declared before the registry is open; ``Authenticator.require`` binds one directly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, FastAPI, Request, Response, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shipyard.errors import AuthenticationError, ConfigurationError, PermissionDeniedError
from shipyard.files import write_private
from shipyard.registry.registry import Registry
from shipyard.registry.users import (
    API_KEY_PREFIX,
    Principal,
    Role,
    Users,
    hash_api_key,
    role_allows,
)
from shipyard.server.responses import error_response
from shipyard.settings import Settings

TOKEN_URL = "/v1/auth/token"  # noqa: S105 - a route, not a password
ISSUER = "shipyard"
ALGORITHM = "HS256"
SECRET_BYTES = 32
CLAIMS = ["sub", "role", "kind", "iat", "exp", "iss"]
EXPIRED = f"token expired; request a new one at POST {TOKEN_URL}"
MISSING = (
    f"missing credentials; send Authorization: Bearer <token from POST {TOKEN_URL}> "
    "or X-API-Key: <API key>"
)
CACHE_LIMIT = 10_000

BEARER = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)

PrincipalDependency = Callable[..., Awaitable[Principal]]
OptionalPrincipalDependency = Callable[..., Awaitable[Principal | None]]


# -- tokens -------------------------------------------------------------------------------


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
        if settings.auth_secret is not None:
            secret = settings.auth_secret.get_secret_value().encode("utf-8")
        else:
            secret = load_or_create_secret(settings.auth_secret_path)
        return cls(secret, settings.token_ttl_seconds)

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


def load_or_create_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path`` (hex), created with mode 0600 if missing.

    Several server workers may start at once: the file appears atomically and the first
    writer wins, so they all end up signing with the same secret.
    """
    if not path.exists():
        _create_secret(path)
    try:
        text = path.read_text(encoding="ascii").strip()
        secret = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigurationError(
            f"cannot read the token-signing secret at {path} ({error}); delete it to make a new "
            "one (signed-in users will need new tokens) or set SHIPYARD_AUTH_SECRET"
        ) from error
    if len(secret) < SECRET_BYTES:
        raise ConfigurationError(
            f"the token-signing secret at {path} is shorter than {SECRET_BYTES} bytes; "
            "delete it to make a new one or set SHIPYARD_AUTH_SECRET"
        )
    return secret


def _create_secret(path: Path) -> None:
    secret = os.urandom(SECRET_BYTES).hex() + "\n"
    try:
        write_private(path, secret.encode("ascii"), overwrite=False)  # one made first wins
    except OSError as error:
        raise ConfigurationError(
            f"cannot create the token-signing secret at {path} ({error}); make its folder "
            "writable or set SHIPYARD_AUTH_SECRET"
        ) from error


# -- requests -----------------------------------------------------------------------------


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
        self._dependencies: dict[Role, PrincipalDependency] = {}

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

    def require(self, role: Role) -> PrincipalDependency:
        """A FastAPI dependency: the caller's ``Principal`` if their role is ``role`` or higher."""
        if role not in self._dependencies:

            async def dependency(
                request: Request,
                bearer: Annotated[str | None, Security(BEARER)],
                api_key: Annotated[str | None, Security(API_KEY)],
            ) -> Principal:
                return await self.principal(request, bearer, api_key, role)

            self._dependencies[role] = dependency
        return self._dependencies[role]

    def inference(self) -> OptionalPrincipalDependency:
        """A FastAPI dependency: ``None`` (anyone) unless ``protect_inference``, then viewer+."""

        async def dependency(
            request: Request,
            bearer: Annotated[str | None, Security(BEARER)],
            api_key: Annotated[str | None, Security(API_KEY)],
        ) -> Principal | None:
            if not self.protect_inference:
                return None
            return await self.principal(request, bearer, api_key, Role.VIEWER)

        return dependency

    def issue_token(self, username: str, password: str) -> TokenResponse:
        """The password flow: check the password (argon2, slow on purpose), sign a token."""
        principal = self.users.authenticate(username, password)
        token, expires_in = self.issuer.issue(principal)
        return TokenResponse(access_token=token, token_type="bearer", expires_in=expires_in)  # noqa: S106


# -- wiring into an app -------------------------------------------------------------------


def attach(app: FastAPI, authenticator: Authenticator) -> None:
    """Make ``authenticator`` the one ``require``, ``inference`` and ``router`` use on ``app``."""
    app.state.authenticator = authenticator


def authenticator_of(request: Request) -> Authenticator:
    """The authenticator attached to the request's app; refuses (500) if there is none."""
    authenticator = getattr(request.app.state, "authenticator", None)
    if not isinstance(authenticator, Authenticator):
        raise ConfigurationError(
            "no authenticator is attached to this app; call shipyard.server.auth.attach(app, "
            "Authenticator.from_settings(settings, registry)) at startup"
        )
    return authenticator


def require(role: Role) -> PrincipalDependency:
    """A FastAPI dependency: the caller's ``Principal`` if their role is ``role`` or higher."""
    return _REQUIRE[role]


def _late_bound(role: Role) -> PrincipalDependency:
    async def dependency(
        request: Request,
        bearer: Annotated[str | None, Security(BEARER)],
        api_key: Annotated[str | None, Security(API_KEY)],
    ) -> Principal:
        return await authenticator_of(request).principal(request, bearer, api_key, role)

    dependency.__name__ = f"require_{role.value}"
    return dependency


_REQUIRE = {role: _late_bound(role) for role in Role}


async def inference(
    request: Request,
    bearer: Annotated[str | None, Security(BEARER)],
    api_key: Annotated[str | None, Security(API_KEY)],
) -> Principal | None:
    """A FastAPI dependency of inference routes: open, or viewer+ when ``protect_inference``."""
    authenticator = authenticator_of(request)
    if not authenticator.protect_inference:
        return None
    return await authenticator.principal(request, bearer, api_key, Role.VIEWER)


def install(app: FastAPI, authenticator: Authenticator | None = None) -> None:
    """Render auth errors as ``{"error": ...}``: 401 with ``WWW-Authenticate``, 403 plain."""

    async def unauthenticated(_: Request, error: Exception) -> Response:
        reason = _header_safe(str(error))
        response = error_response(str(error), 401)
        response.headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{reason}"'
        )
        return response

    async def forbidden(_: Request, error: Exception) -> Response:
        return error_response(str(error), 403)

    app.add_exception_handler(AuthenticationError, unauthenticated)
    app.add_exception_handler(PermissionDeniedError, forbidden)
    if authenticator is not None:
        attach(app, authenticator)


def _header_safe(text: str) -> str:
    # A quoted-string in a latin-1 header: no quotes, backslashes or control characters.
    cleaned = text.replace("\\", "/").replace('"', "'")
    return "".join(c if " " <= c <= "~" else "?" for c in cleaned)


# -- the password flow --------------------------------------------------------------------


class TokenResponse(BaseModel):
    """What ``POST /v1/auth/token`` answers (RFC 6749 section 5.1)."""

    access_token: str
    token_type: str
    expires_in: int


class ErrorBody(BaseModel):
    """The error shape of every route."""

    error: str


router = APIRouter(tags=["auth"])


@router.post(
    TOKEN_URL,
    response_model=TokenResponse,
    responses={401: {"model": ErrorBody, "description": "Wrong username or password"}},
    summary="Sign in with a username and password (OAuth2 password flow)",
)
def token(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenResponse:
    """A short-lived bearer token for ``Authorization: Bearer <access_token>``."""
    # A plain def: FastAPI runs it in a worker thread, so argon2 does not stall the event loop.
    response.headers["Cache-Control"] = "no-store"
    return authenticator_of(request).issue_token(form.username, form.password)

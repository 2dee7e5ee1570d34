"""Auth on an app: the authenticator it carries, the dependencies routes declare to find it
at request time, and how auth errors are answered (401 with a challenge, 403)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import FastAPI, Request, Response, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from shipyard.errors import AuthenticationError, ConfigurationError, PermissionDeniedError
from shipyard.registry.users import Principal, Role
from shipyard.server.auth.authenticator import Authenticator
from shipyard.server.auth.tokens import TOKEN_URL
from shipyard.server.responses import error_response

# Optional here so that a missing credential gets our 401 with its message, not FastAPI's.
BEARER = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)

PrincipalDependency = Callable[..., Awaitable[Principal]]


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

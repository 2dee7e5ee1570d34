"""Who is calling, and may they: short-lived JWTs from the password flow, API keys, roles.

Credentials come as ``Authorization: Bearer <token or sk_ key>`` or ``X-API-Key: <sk_ key>``.
A JWT (HS256, claims ``sub role kind iat exp iss``) is checked without touching the database,
so a removed user or a changed role takes effect when their token expires
(``token_ttl_seconds``, default 15 minutes). An API key is looked up by its SHA-256 and the
answer is cached for ``cache_seconds`` (default 5), so a revoked key keeps working for up to
that long on a server that saw it just before.

One concept per module: ``secret`` (the HS256 secret and its file), ``tokens`` (signing and
checking JWTs), ``authenticator`` (credentials of a request → ``Principal``), ``dependencies``
(what routes declare, and how auth errors are answered), ``routes`` (``POST /v1/auth/token``).

Wiring::

    install(app)                                 # error handlers: 401 with WWW-Authenticate, 403
    app.include_router(router)                   # POST /v1/auth/token
    attach(app, Authenticator.from_settings(settings, registry))   # e.g. in the lifespan

    @app.post("/admin-thing", dependencies=[Depends(require(Role.ADMIN))])
    @app.post("/v2/models/{name}/infer", dependencies=[Depends(inference)])

``require`` and ``inference`` find the authenticator on the app at request time, so routers
can be declared before the registry is open.
"""

from shipyard.server.auth.authenticator import Authenticator
from shipyard.server.auth.dependencies import (
    attach,
    authenticator_of,
    inference,
    install,
    require,
)
from shipyard.server.auth.routes import router
from shipyard.server.auth.secret import load_or_create_secret
from shipyard.server.auth.tokens import TOKEN_URL, TokenIssuer, TokenResponse

__all__ = [
    "TOKEN_URL",
    "Authenticator",
    "TokenIssuer",
    "TokenResponse",
    "attach",
    "authenticator_of",
    "inference",
    "install",
    "load_or_create_secret",
    "require",
    "router",
]

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from shipyard.errors import AuthenticationError, ConfigurationError
from shipyard.registry import Principal, Registry, Role, Users
from shipyard.server.auth import (
    Authenticator,
    TokenIssuer,
    inference,
    install,
    load_or_create_secret,
    require,
    router,
)
from shipyard.settings import Settings

SECRET = b"s" * 32
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(sqlite_settings: Settings) -> Iterator[Registry]:
    with Registry.open(sqlite_settings) as opened:
        yield opened


@pytest.fixture
def users(registry: Registry) -> Users:
    users = Users(registry, hasher=FAST)
    users.add("ada", "admin password", Role.ADMIN)
    users.add("otto", "operator password", Role.OPERATOR)
    users.add("vera", "viewer password", Role.VIEWER)
    return users


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(authenticator: Authenticator) -> FastAPI:
    app = FastAPI()
    install(app, authenticator)
    app.include_router(router)

    @app.post("/admin")
    async def admin_only(
        principal: Annotated[Principal, Depends(require(Role.ADMIN))],
    ) -> dict[str, str]:
        return {"name": principal.name, "kind": principal.kind}

    @app.post("/operate", dependencies=[Depends(require(Role.OPERATOR))])
    async def operate() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/infer")
    async def infer(
        principal: Annotated[Principal | None, Depends(inference)],
    ) -> dict[str, str | None]:
        return {"caller": principal.name if principal else None}

    return app


@pytest.fixture
def authenticator(users: Users, clock: Clock) -> Authenticator:
    return Authenticator(users, TokenIssuer(SECRET, 60), clock=clock)


@pytest.fixture
def client(authenticator: Authenticator) -> TestClient:
    return TestClient(make_app(authenticator))


def sign_in(client: TestClient, username: str, password: str) -> str:
    response = client.post("/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert reason in response.json()["error"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert reason in challenge


def test_password_flow_issues_a_bearer_token(client: TestClient) -> None:
    response = client.post("/v1/auth/token", data={"username": "ada", "password": "admin password"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 60
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], issuer="shipyard")
    assert claims["sub"] == "ada"
    assert claims["role"] == "admin"
    assert claims["kind"] == "user"
    assert claims["exp"] - claims["iat"] == 60
    answer = client.post("/admin", headers=bearer(body["access_token"]))
    assert answer.status_code == 200
    assert answer.json() == {"name": "ada", "kind": "user"}


def test_wrong_password_is_401_like_an_unknown_user(client: TestClient) -> None:
    wrong = client.post("/v1/auth/token", data={"username": "ada", "password": "not it at all"})
    unknown = client.post("/v1/auth/token", data={"username": "eve", "password": "not it at all"})
    assert_unauthorized(wrong, "wrong username or password")
    assert wrong.json() == unknown.json()


def test_missing_credentials_are_401(client: TestClient) -> None:
    assert_unauthorized(client.post("/operate"), "missing credentials")
    assert_unauthorized(
        client.post("/operate", headers={"Authorization": "Basic YTpi"}),
        "unsupported Authorization scheme 'Basic'",
    )


def test_expired_token_is_401_with_the_reason(authenticator: Authenticator) -> None:
    past = TokenIssuer(SECRET, 60, clock=lambda: time.time() - 3600)
    token, _ = past.issue(Principal("ada", Role.ADMIN, "user"))
    client = TestClient(make_app(authenticator))
    response = client.post("/admin", headers=bearer(token))
    assert_unauthorized(response, "token expired; request a new one at POST /v1/auth/token")


def test_tampered_or_foreign_tokens_are_401(client: TestClient) -> None:
    token = sign_in(client, "vera", "viewer password")
    header, _, signature = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="shipyard")
    promoted = jwt.encode({**claims, "role": "admin"}, SECRET, algorithm="HS256").split(".")[1]
    tampered = f"{header}.{promoted}.{signature}"
    assert_unauthorized(client.post("/admin", headers=bearer(tampered)), "invalid token")
    foreign = jwt.encode({**claims, "role": "admin"}, b"x" * 32, algorithm="HS256")
    assert_unauthorized(client.post("/admin", headers=bearer(foreign)), "invalid token")
    assert_unauthorized(client.post("/admin", headers=bearer("not-a-jwt")), "invalid token")
    other_issuer = jwt.encode({**claims, "iss": "elsewhere"}, SECRET, algorithm="HS256")
    assert_unauthorized(client.post("/admin", headers=bearer(other_issuer)), "invalid token")


def test_a_lower_role_is_403(client: TestClient) -> None:
    viewer = sign_in(client, "vera", "viewer password")
    operator = sign_in(client, "otto", "operator password")
    response = client.post("/admin", headers=bearer(viewer))
    assert response.status_code == 403
    assert response.json() == {"error": "role viewer cannot POST /admin; needs admin"}
    assert "WWW-Authenticate" not in response.headers
    assert client.post("/admin", headers=bearer(operator)).status_code == 403
    assert client.post("/operate", headers=bearer(operator)).status_code == 200
    assert client.post("/operate", headers=bearer(viewer)).status_code == 403


def test_api_key_in_either_header(client: TestClient, users: Users) -> None:
    _, secret = users.create_api_key("scorer", Role.ADMIN)
    for headers in (bearer(secret), {"X-API-Key": secret}):
        response = client.post("/admin", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"name": "scorer", "kind": "api_key"}
    assert_unauthorized(client.post("/admin", headers={"X-API-Key": "sk_nope"}), "unknown API key")


def test_revoked_api_key_is_401(client: TestClient, users: Users) -> None:
    _, secret = users.create_api_key("scorer", Role.OPERATOR)
    users.revoke_api_key("scorer")
    assert_unauthorized(client.post("/operate", headers={"X-API-Key": secret}), "was revoked")


def test_revocation_reaches_a_server_when_its_cache_expires(
    client: TestClient, users: Users, clock: Clock
) -> None:
    _, secret = users.create_api_key("scorer", Role.OPERATOR)
    assert client.post("/operate", headers={"X-API-Key": secret}).status_code == 200
    users.revoke_api_key("scorer")
    # Within the cache window the verified key is trusted without a query.
    assert client.post("/operate", headers={"X-API-Key": secret}).status_code == 200
    clock.now += 5.1
    assert_unauthorized(client.post("/operate", headers={"X-API-Key": secret}), "was revoked")


def test_inference_is_open_unless_protected(users: Users) -> None:
    open_client = TestClient(make_app(Authenticator(users, TokenIssuer(SECRET, 60))))
    assert open_client.post("/infer").json() == {"caller": None}

    protected = TestClient(
        make_app(Authenticator(users, TokenIssuer(SECRET, 60), protect_inference=True))
    )
    assert_unauthorized(protected.post("/infer"), "missing credentials")
    token = sign_in(protected, "vera", "viewer password")
    assert protected.post("/infer", headers=bearer(token)).json() == {"caller": "vera"}


def test_docs_list_the_token_route_and_security_schemes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["paths"]["/v1/auth/token"]["post"]["tags"] == ["auth"]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"


def test_issuer_round_trip_and_refuses_short_secrets() -> None:
    issuer = TokenIssuer(SECRET, 30)
    principal = Principal("svc", Role.OPERATOR, "api_key")
    token, expires_in = issuer.issue(principal)
    assert expires_in == 30
    assert issuer.verify(token) == principal
    with pytest.raises(AuthenticationError, match="invalid token"):
        TokenIssuer(b"t" * 32, 30).verify(token)
    with pytest.raises(ConfigurationError, match="at least 32"):
        TokenIssuer(b"short", 30)


def test_secret_file_is_made_once_and_private(home: Path) -> None:
    settings = Settings(home=home)
    path = settings.auth_secret_path
    first = TokenIssuer.from_settings(settings)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert len(load_or_create_secret(path)) == 32
    token, _ = first.issue(Principal("ada", Role.ADMIN, "user"))
    assert TokenIssuer.from_settings(settings).verify(token).name == "ada"


def test_configured_secret_wins(home: Path) -> None:
    settings = Settings(home=home, auth_secret=SecretStr("c" * 40), token_ttl_seconds=120)
    issuer = TokenIssuer.from_settings(settings)
    assert issuer.ttl_seconds == 120
    assert not settings.auth_secret_path.exists()
    token, _ = issuer.issue(Principal("ada", Role.ADMIN, "user"))
    assert jwt.decode(token, b"c" * 40, algorithms=["HS256"], issuer="shipyard")["sub"] == "ada"


def test_an_app_without_an_authenticator_refuses(users: Users) -> None:
    app = FastAPI()

    @app.get("/guarded", dependencies=[Depends(require(Role.VIEWER))])
    async def guarded() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/guarded").status_code == 500

"""Schemathesis over the app's own OpenAPI document: whatever it sends, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python.asgi import shutdown_lifespans

from shipyard.server.app import create_app
from shipyard.settings import Settings

# The document does not depend on settings and building the app touches no disk, so the schema
# can be read at import; the requests go to an app over the trained home (``fuzzed_app``).
# (``schemathesis.pytest.from_fixture`` would avoid this, but it fails on pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture
def fuzzed_app(server_settings: Settings) -> Iterator[FastAPI]:
    """An app over the trained home; schemathesis starts its lifespan on the first request."""
    yield create_app(server_settings)
    # Schemathesis keeps every app's lifespan running until the interpreter exits: stop ours
    # now, while its home still exists.
    shutdown_lifespans()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # one app per operation is what we want
    ],
)
def test_no_request_gets_a_server_error(case: schemathesis.Case[Any], fuzzed_app: FastAPI) -> None:
    response = case.call(app=fuzzed_app)
    assert response.status_code < 500, f"{case.as_curl_command()}\n-> {response.text}"
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text

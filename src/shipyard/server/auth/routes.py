"""``POST /v1/auth/token``: the OAuth2 password flow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from shipyard.server.auth.dependencies import authenticator_of
from shipyard.server.auth.tokens import TOKEN_URL, TokenResponse
from shipyard.server.responses import ErrorBody

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

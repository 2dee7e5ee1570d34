"""The registry over HTTP: models, versions, and moving aliases (admin only)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from shipyard.registry import ModelInfo, ModelRef, ModelVersionInfo, Principal, Role
from shipyard.server.auth import inference, require
from shipyard.server.responses import json_response
from shipyard.server.state import state_of

router = APIRouter(prefix="/v1/registry", tags=["registry"], dependencies=[Depends(inference)])
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


class PromoteBody(BaseModel):
    """Which version an alias should point to."""

    version: int = Field(ge=1, description="Version number of the model")


def _model(info: ModelInfo) -> dict[str, Any]:
    data = asdict(info)
    data["created_at"] = info.created_at.isoformat()
    return data


def _version(info: ModelVersionInfo) -> dict[str, Any]:
    data = asdict(info)
    data["created_at"] = info.created_at.isoformat()
    data["ref"] = info.ref
    return data


@router.get("/models")
async def list_models(request: Request) -> Response:
    """Every registered model with its latest version and aliases."""
    models = await asyncio.to_thread(state_of(request).registry.list_models)
    return json_response({"models": [_model(m) for m in models]})


@router.get("/models/{name}")
async def show_model(request: Request, name: str) -> Response:
    """A model and all its versions."""
    registry = state_of(request).registry
    model = await asyncio.to_thread(registry.get_model, name)
    versions = await asyncio.to_thread(registry.list_versions, name)
    return json_response({**_model(model), "versions": [_version(v) for v in versions]})


@router.get("/models/{name}/versions/{version}")
async def show_version(request: Request, name: str, version: int) -> Response:
    """One version: metrics, schemas, artifact digest, signing key, aliases, tags."""
    info = await asyncio.to_thread(
        state_of(request).registry.get_version, ModelRef(name, version, None)
    )
    return json_response(_version(info))


@router.post("/models/{name}/aliases/{alias}")
async def promote(
    request: Request, name: str, alias: str, body: PromoteBody, principal: Admin
) -> Response:
    """Point an alias at a version; every server follows within seconds."""
    info = await asyncio.to_thread(
        state_of(request).registry.promote,
        ModelRef(name, body.version, None),
        alias,
        actor=f"{principal.kind}:{principal.name}",
        event=True,
    )
    return json_response(_version(info))


@router.post("/models/{name}/aliases/{alias}/rollback")
async def rollback(request: Request, name: str, alias: str, principal: Admin) -> Response:
    """Move an alias back to the version it pointed to before its last move."""
    info = await asyncio.to_thread(
        state_of(request).registry.rollback, name, alias, actor=f"{principal.kind}:{principal.name}"
    )
    return json_response(_version(info))

"""What every command shares: the consoles and the settings chosen by global options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shipyard.registry import Registry
from shipyard.settings import Settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def state_callback(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(help="Shipyard home folder [env: SHIPYARD_HOME; default ./.shipyard]"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Registry database URL [env: SHIPYARD_DATABASE_URL]"),
    ] = None,
) -> None:
    """Take machine-learning models from data to signed, served production."""
    overrides: dict[str, object] = {}
    if home is not None:
        overrides["home"] = home
    if database_url is not None:
        overrides["database_url"] = database_url
    ctx.obj = Settings(**overrides)  # type: ignore[arg-type]


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built by the global options."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


@contextmanager
def open_registry(ctx: typer.Context) -> Iterator[Registry]:
    """The registry of the current settings, closed afterwards."""
    registry = Registry.open(settings_of(ctx))
    try:
        yield registry
    finally:
        registry.close()

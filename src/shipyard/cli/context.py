"""What every command shares: the consoles, the global options and the settings they choose.

Imports stay light here: ``shipyard --help`` loads this module, and the registry (SQLAlchemy,
Alembic, pandas) is imported only when a command opens it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from shipyard import __version__
from shipyard.messaging.backends import CLIENT_LOGGERS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from shipyard.registry import Registry
    from shipyard.settings import Settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

#: Libraries whose logs (reconnect attempts, transport errors) only repeat what the command's
#: one-line error says; ``--verbose`` shows them.


#: Help width when the output is no terminal (a pipe, a file, a test): wide enough that no
#: option name is cut. A terminal's own width wins; so does TERMINAL_WIDTH or COLUMNS.
HELP_WIDTH = 100

MetricsHostOption = Annotated[
    str,
    typer.Option(
        "--metrics-host",
        metavar="ADDRESS",
        help="Address --metrics-port listens on (0.0.0.0: every interface, for a "
        "Prometheus on another machine)",
    ),
]


class _Argument(TyperArgument):
    """A positional argument shown as its metavar alone: ``MODEL`` (required) or ``[DEST]``
    in usage, without a value type beside it in help."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


class _ReadableHelp:
    """Help that reads well: flags (``--force``, ``--help``) show no value type, options and
    arguments a metavar (``--rows ROWS`` unless one is given), and the width suits where the
    help goes."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.metavar is None:
                param.metavar = "" if param.is_flag else (param.name or "").upper()
            elif type(param) is TyperArgument:
                # Typer builds its parameters itself, with no class to choose; the subclass
                # only changes how the argument is shown.
                param.__class__ = _Argument
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from typer import rich_utils

        width = rich_utils.MAX_WIDTH  # from TERMINAL_WIDTH, typer's own setting
        if width is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
            rich_utils.MAX_WIDTH = HELP_WIDTH
        try:
            super().format_help(ctx, formatter)  # type: ignore[misc]
        finally:
            rich_utils.MAX_WIDTH = width


class Command(_ReadableHelp, TyperCommand):
    """A command whose help reads well (``cls=`` of every ``@app.command``)."""


class Group(_ReadableHelp, TyperGroup):
    """A command group whose help reads well (``cls=`` of every ``typer.Typer``)."""


@dataclass
class GlobalOptions:
    """The root options; the settings are built when a command first asks for them."""

    overrides: dict[str, object] = field(default_factory=dict)
    verbose: bool = False
    settings: Settings | None = None


def _print_version(value: bool) -> None:
    if value:
        console.print(f"shipyard {__version__}")
        raise typer.Exit


def state_callback(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Shipyard home folder \\[env: SHIPYARD_HOME; default ./.shipyard]"
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Registry database URL \\[env: SHIPYARD_DATABASE_URL]"),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Show the libraries' logs, e.g. broker reconnects"),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Take machine-learning models from data to signed, served production."""
    overrides: dict[str, object] = {}
    if home is not None:
        overrides["home"] = home
    if database_url is not None:
        overrides["database_url"] = database_url
    ctx.obj = GlobalOptions(overrides=overrides, verbose=verbose)
    configure_logging(verbose, ctx.invoked_subcommand)


def configure_logging(verbose: bool, command: str | None) -> None:
    """Quiet the libraries' logs unless ``verbose``; then show them, with Shipyard's, on
    stderr."""
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.CRITICAL)
    # Stream workers set up their own log format, which names the worker.
    if verbose and command != "stream":
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def _options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    return root.obj


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built by the global options."""
    from shipyard.settings import Settings

    options = _options(ctx)
    if options.settings is None:
        options.settings = Settings(**options.overrides)  # type: ignore[arg-type]
    return options.settings


def verbose_of(ctx: typer.Context) -> bool:
    """Whether ``--verbose`` was given."""
    return _options(ctx).verbose


@contextmanager
def open_registry(ctx: typer.Context) -> Iterator[Registry]:
    """The registry of the current settings, closed afterwards."""
    from shipyard.registry import Registry

    registry = Registry.open(settings_of(ctx))
    try:
        yield registry
    finally:
        registry.close()


def serve_metrics(port: int, host: str, registry: CollectorRegistry | None = None) -> int:
    """Serve Prometheus metrics on ``host:port`` (0: any free port) in a thread; the port."""
    from prometheus_client import REGISTRY, start_http_server

    from shipyard.errors import InvalidInputError

    try:
        server, _ = start_http_server(port, addr=host, registry=registry or REGISTRY)
    except OSError as error:
        raise InvalidInputError(
            f"cannot serve metrics on {host}:{port}: {error.strerror or error}; give an "
            "address of this machine with --metrics-host and a free port with --metrics-port"
        ) from error
    return int(server.server_port)


def stage_line(name: str, status: str, seconds: float) -> str:
    """How an ended stage is printed: a green tick or a red cross, its name and seconds."""
    mark = "[green]✓[/]" if status == "succeeded" else "[red]✗[/]"
    return f"  {mark} {name:<9} {seconds:7.2f} s"

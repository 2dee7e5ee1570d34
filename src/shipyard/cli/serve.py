"""``shipyard serve``: the inference server (uvicorn) over the registry.

The command binds the port itself and hands the socket to uvicorn, so a taken port is one
line (exit 6) before anything is announced, and the announcement names a port that is held.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.context import console, settings_of, verbose_of
from shipyard.errors import ConfigurationError, UnavailableError
from shipyard.registry.reference import DEFAULT_ALIAS

if TYPE_CHECKING:
    import uvicorn

#: uvicorn's exit status when the application fails to start (a model that cannot load).
STARTUP_FAILURE = 3


def serve(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            "-m",
            metavar="NAME",
            help=f"Model to load at start: fraud (its {DEFAULT_ALIAS} alias), fraud:3, "
            "fraud@canary; repeat the option or separate names with commas; the first answers "
            "/invocations",
        ),
    ] = None,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Server processes")] = 1,
    max_batch_size: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Most rows per predictor call")
    ] = None,
    max_batch_delay_ms: Annotated[
        float | None,
        typer.Option(metavar="MS", min=0, help="Longest wait for a batch to fill"),
    ] = None,
    protect_inference: Annotated[
        bool | None,
        typer.Option(
            "--protect-inference/--open-inference",
            help="Require a token or API key on inference routes \\[default: open, or "
            "what the environment sets]",
        ),
    ] = None,
) -> None:
    """Serve predictions over Open Inference Protocol, MLflow scoring and plain JSON."""
    import uvicorn

    from shipyard.registry import Registry

    overrides: dict[str, object] = {"serve_models": split_names(models)}
    if max_batch_size is not None:
        overrides["max_batch_size"] = max_batch_size
    if max_batch_delay_ms is not None:
        overrides["max_batch_delay_ms"] = max_batch_delay_ms
    if protect_inference is not None:
        overrides["protect_inference"] = protect_inference
    settings = settings_of(ctx).model_copy(update=overrides)
    # Fail here, in one line, if the database or a model cannot be reached or verified.
    with Registry.open(settings) as registry:
        for ref in settings.serve_models:
            registry.get_version(ref if ("@" in ref or ":" in ref) else f"{ref}@{DEFAULT_ALIAS}")
    listener = bind(host, port)
    bound_port = listener.getsockname()[1]
    console.print(
        f"serving {', '.join(settings.serve_models) or 'models on demand'} on "
        f"http://{host}:{bound_port} ({workers} worker{'s' * (workers > 1)}); docs at /docs"
    )
    options = {
        "host": host,
        "port": bound_port,
        "log_level": "info" if verbose_of(ctx) else "warning",
        "access_log": False,
    }
    if workers == 1:
        from shipyard.server.app import create_app

        _run(uvicorn.Config(create_app(settings), **options), listener)
        return
    # Worker processes (uvicorn spawns them) inherit this environment and rebuild their
    # settings from it.
    metrics_dir = settings.home / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    environment = settings.model_copy(update={"prometheus_multiproc_dir": metrics_dir}).child_env()
    os.environ.clear()
    os.environ.update(environment)
    config = uvicorn.Config(
        "shipyard.server.app:create_app",
        factory=True,
        workers=workers,
        **options,
    )
    _run(config, listener)


def split_names(values: list[str] | None) -> list[str]:
    """``-m a -m b``, ``-m a,b`` and a mix of both, as one list of names."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn to listen on; a taken port is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds: a port left in TIME_WAIT by a server that just stopped is free.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        # Listening now holds the port: a socket only bound does not keep a second server
        # (SO_REUSEADDR) from binding it too. uvicorn's own backlog.
        listener.listen(2048)
    except OverflowError:  # a port outside 0-65535
        listener.close()
        raise ConfigurationError(f"port {port} is not a TCP port; give one of 0-65535") from None
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise UnavailableError(
                f"port {port} on {host} is in use; stop what listens there (`ss -ltnp` shows "
                "it) or choose another with --port"
            ) from None
        reason = error.strerror or str(error)
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {reason}; check --host and --port"
        ) from None
    listener.set_inheritable(True)  # worker processes inherit it
    return listener


def _run(config: uvicorn.Config, listener: socket.socket) -> None:
    """Serve on the bound socket until Ctrl-C or SIGTERM; with workers, under uvicorn's
    process supervisor."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[listener]).run()
            return
        server = uvicorn.Server(config)
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        return
    finally:
        listener.close()
    if not server.started:  # uvicorn has logged why the application did not start
        raise typer.Exit(STARTUP_FAILURE)

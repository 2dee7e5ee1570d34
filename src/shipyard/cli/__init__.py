"""The ``shipyard`` command line: Typer commands over the packages, errors as one line.

A ``ShipyardError`` becomes ``error: <message>`` on stderr and the error's exit code;
usage mistakes exit 2 as Typer reports them.
"""

from __future__ import annotations

import sys

import typer

from shipyard.cli import (
    data,
    demo,
    examples,
    feedback,
    keys,
    models,
    monitor,
    pipeline,
    predict,
    queues,
    retrain,
    runs,
    serve,
    stream,
    traffic,
    users,
)
from shipyard.cli.context import Command, Group, console, err_console, state_callback
from shipyard.errors import ShipyardError

app = typer.Typer(
    cls=Group,
    name="shipyard",
    help="Take machine-learning models from data to signed, served production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    callback=state_callback,
)
app.add_typer(data.app, name="data")
app.add_typer(examples.app, name="examples")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(models.app, name="models")
app.add_typer(runs.app, name="runs")
app.add_typer(keys.app, name="keys")
app.add_typer(users.app, name="users")
app.add_typer(monitor.app, name="monitor")
app.command("predict", cls=Command)(predict.predict)
app.command("serve", cls=Command)(serve.serve)
app.command("stream", cls=Command)(stream.stream)
app.command("publish", cls=Command)(queues.publish)
app.command("consume", cls=Command)(queues.consume)
app.command("feedback", cls=Command)(feedback.feedback)
app.command("retrain", cls=Command)(retrain.retrain)
app.command("traffic", cls=Command)(traffic.traffic)
app.command("demo", cls=Command)(demo.demo)

__all__ = ["app", "console", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; always exits with the command's status."""
    try:
        # Standalone mode: Typer reports usage errors (exit 2) and exits 0 on success.
        app(args=argv, prog_name="shipyard")
    except ShipyardError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)

"""``shipyard retrain NAME``: retrain a model by hand, on the monitor's path, lock and events."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Annotated

import typer
from rich.markup import escape

from shipyard.cli.context import console, err_console, open_registry, settings_of, stage_line

#: Exit codes of outcomes that are not the promotion or a lost gate.
EXIT_FAILED = 1
EXIT_REFUSED = 4  # as a ConflictError: the state forbids it now


def retrain(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Do not wait for the cooldown (a retrain in flight still refuses)"
        ),
    ] = False,
) -> None:
    """Retrain NAME now on its labelled production rows, with its production version's spec;
    the candidate is promoted only if it beats production on the newest labelled rows.
    With ``gate.shadow`` set, a winner goes into shadow instead, and the monitor promotes it
    once live labels say so; a candidate in shadow is judged first here too (printed), as
    each monitor pass does. Exits 0 when promoted, put in shadow or kept out by the gate,
    1 when the retrain failed, 4 when it was refused (cooldown, one in flight or in shadow,
    too few rows, no retrain: section)."""
    from shipyard.monitoring.log import open_prediction_log
    from shipyard.monitoring.monitor import check_log
    from shipyard.monitoring.retraining import MANUAL, Trigger
    from shipyard.pipeline.retrain import PipelineRetrainer

    settings = settings_of(ctx)
    log = check_log(open_prediction_log(settings))
    owner = f"cli:{socket.gethostname()}:{os.getpid()}"
    trigger = Trigger(MANUAL, f"{MANUAL}:{uuid.uuid4().hex}")
    with open_registry(ctx) as registry, console.status(f"retraining {name}…") as status:

        def listener(stage: str, state: str, seconds: float) -> None:
            if state == "running":
                status.update(f"retraining {name}: {stage}…")
            else:
                console.print(stage_line(stage, state, seconds))

        retrainer = PipelineRetrainer(registry, log, settings, owner=owner, listener=listener)
        # As the monitor does: a shadow that can be judged (or is past its deadline) is
        # ended first, so a retrain is not refused for a shadow already decided.
        judged = retrainer.follow_shadow(name)
        if judged is not None and judged.status != "shadowing":
            for event in judged.events:
                console.print(f"  {event.kind:<18} {escape(event.key)}")
            console.print(f"{name}: shadow {judged.status} — {escape(judged.reason)}")
        outcome = retrainer.retrain(name, trigger, force=force)
    try:
        log.close()
    finally:
        for event in outcome.events:
            console.print(f"  {event.kind:<18} {escape(event.key)}")
    if outcome.status in ("promoted", "lost", "shadowing"):
        console.print(f"{name}: {outcome.status} — {escape(outcome.reason)}")
        return
    err_console.print(
        f"[bold red]error:[/] {name}: retrain {outcome.status}: {escape(outcome.reason)}"
    )
    raise typer.Exit(EXIT_FAILED if outcome.status == "failed" else EXIT_REFUSED)

"""The end of ``shipyard demo``: what to try next, as commands that work on the demo's home.

The lines form a shell script (``#`` comments, two servers started with ``&``), so a user can
paste them one by one or all at once, and the tests run them as printed.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
from rich.console import Console

from shipyard.registry import DEFAULT_ALIAS

#: The port the suggested ``shipyard serve`` listens on (``serve``'s default, written out).
SERVE_PORT = 8000
#: The root options of ``shipyard`` that choose the home and registry; a suggestion repeats
#: those the demo was given, so that it acts on the same home.
HOME_OPTIONS = {"home": "--home", "database_url": "--database-url"}
#: How a suggestion names a database URL that holds a password, which is never printed.
_FROM_ENVIRONMENT = '"$SHIPYARD_DATABASE_URL"'


@dataclass(frozen=True)
class NextStep:
    """One thing to try: what it shows, then the command lines that do it."""

    purpose: str
    commands: tuple[str, ...]


def shipyard_command(root_params: Mapping[str, object]) -> str:
    """``shipyard`` with the home options the demo was run with (``--home``, …). A database
    URL that holds a password is never printed: the command reads it from
    ``SHIPYARD_DATABASE_URL`` instead (which the user sets)."""
    words = ["shipyard"]
    for name, option in HOME_OPTIONS.items():
        value = root_params.get(name)
        if value is None:
            continue
        if name == "database_url" and _has_password(str(value)):
            words.append(option)
            words.append(_FROM_ENVIRONMENT)
            continue
        words += [option, str(value)]
    return shlex.join(words).replace(shlex.quote(_FROM_ENVIRONMENT), _FROM_ENVIRONMENT)


def _has_password(url: str) -> bool:
    return urlsplit(url).password is not None


def write_request(
    frame: pd.DataFrame, probability: pd.Series, features: list[str], target: str, path: Path
) -> Path:
    """A request body for ``POST /v1/models/NAME:predict``: features of two rows of
    ``frame``, the fraud row with the highest ``probability`` and the first legitimate row
    (two first rows when ``frame`` has no fraud)."""
    fraud = (frame[target] == 1).to_numpy()
    if fraud.any() and not fraud.all():
        best = probability.to_numpy().copy()
        best[~fraud] = -1.0
        rows = frame.iloc[[int(best.argmax()), int((~fraud).argmax())]]
    else:
        rows = frame.head(2)
    # Through pandas' JSON writer: plain floats, not numpy scalars the json module refuses.
    instances = json.loads(rows[features].to_json(orient="records"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"instances": instances}, indent=1) + "\n")
    return path


def next_steps(shipyard: str, *, model: str, request: Path, previous: str) -> list[NextStep]:
    """Commands to try after the demo, in an order in which each one works."""
    quote = shlex.quote
    url = f"localhost:{SERVE_PORT}"
    return [
        NextStep(
            "the model's versions, aliases, metrics and lineage",
            (f"{shipyard} models show {model}",),
        ),
        NextStep(
            "score a file of new transactions through the production version",
            (
                f"{shipyard} data generate fraud --rows 1000 --seed 1 -o new.csv",
                f"{shipyard} predict {model}@{DEFAULT_ALIAS} --input new.csv -o scored.csv",
            ),
        ),
        NextStep(
            "serve it over HTTP (Open Inference Protocol, MLflow, plain JSON; docs at /docs) "
            "and ask it about a fraud and a legitimate transaction",
            (
                f"{shipyard} serve --models {model} --port {SERVE_PORT} &",
                f"curl -s --retry 20 --retry-connrefused --retry-delay 1 "
                f"{url}/v1/models/{model}:predict -H 'Content-Type: application/json' "
                f"-d @{quote(str(request))}",
            ),
        ),
        NextStep(
            f"the dashboard (models, versions, live performance, drift, the loop's events): "
            f"open http://{url}/ui in a browser",
            # A newline first: the answer printed before it ends without one.
            (f"curl -s -o /dev/null -w '\\n/ui: %{{http_code}} %{{content_type}}\\n' {url}/ui",),
        ),
        NextStep(
            "score messages: a scorer on the embedded broker, transactions in, results out",
            (
                f"{shipyard} stream --model {model} &",
                f"{shipyard} publish new.csv --queue transactions",
                f"{shipyard} consume results --count 3 --wait 30",
            ),
        ),
        NextStep(
            f"undo the last promotion: {previous} back in {DEFAULT_ALIAS} (the server and "
            "the scorer follow within a second)",
            (f"{shipyard} models rollback {model} --alias {DEFAULT_ALIAS}",),
        ),
        NextStep("stop the server and the scorer", ("kill %1 %2",)),
    ]


def print_next_steps(steps: list[NextStep], out: Console) -> None:
    """The steps as a commented script, each command on one line however wide."""
    out.print()
    out.print("[bold]Next[/], from this folder:")
    for step in steps:
        out.print(f"  [dim]# {step.purpose}[/]", soft_wrap=True)
        for command in step.commands:
            out.print(f"  {command}", markup=False, soft_wrap=True)

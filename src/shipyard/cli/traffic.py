"""``shipyard traffic``: simulated users who ask for predictions and send back true labels."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shipyard.cli.context import console, settings_of
from shipyard.cli.queues import BrokerOption
from shipyard.traffic.config import Protocol

#: Where the users go without --url.
DEFAULT_URL = "http://127.0.0.1:8000"

if TYPE_CHECKING:
    from shipyard.traffic.config import TrafficConfig
    from shipyard.traffic.rows import RowPool
    from shipyard.traffic.runner import Destination


def traffic(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME", help="Model to ask for predictions")
    ] = "fraud",
    users: Annotated[
        int, typer.Option(metavar="N", min=1, max=100_000, help="Users in parallel (closed loop)")
    ] = 10,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="oip (/v2/models/NAME/infer), mlflow (/invocations), json "
            "(/v1/models/NAME:predict) or stream (a broker queue and its results)",
        ),
    ] = Protocol.OIP,
    url: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URL",
            help="Server of the HTTP protocols; repeat it for more addresses of the same "
            "service (a backup load balancer): a user whose address refuses or drops its "
            "connection moves on to the next and sends the request again there "
            "\\[default: http://127.0.0.1:8000]",
        ),
    ] = None,
    broker: BrokerOption = None,
    queue: Annotated[
        str, typer.Option(metavar="QUEUE", help="Input queue of --protocol stream")
    ] = "transactions",
    results: Annotated[
        str,
        typer.Option(
            metavar="QUEUE",
            help="Results queue of --protocol stream; the users take every result on it",
        ),
    ] = "results",
    data: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="CSV, Parquet or JSON Lines rows to send \\[default: the fraud generator]",
        ),
    ] = None,
    rows: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Rows the generator makes \\[default: 20,000]"),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(metavar="COLUMN", help="Column of true labels \\[default: Class or label]"),
    ] = None,
    drift: Annotated[
        str | None,
        typer.Option(
            metavar="SCENARIO",
            help="Drifted rows to switch to: mean-shift, variance, few, many, concept or "
            "new-fraud (as `shipyard data generate --drift`)",
        ),
    ] = None,
    drift_at: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", help="When the users switch to the drifted rows \\[default: 0]"
        ),
    ] = None,
    drift_strength: Annotated[
        float | None, typer.Option(metavar="X", help="As `shipyard data generate`")
    ] = None,
    drift_features: Annotated[
        float | None, typer.Option(metavar="SHARE", help="As `shipyard data generate`")
    ] = None,
    label_probability: Annotated[
        float,
        typer.Option(
            metavar="P", help="Chance that a user sends the true label of an answered prediction"
        ),
    ] = 0.0,
    label_delay_min: Annotated[
        float, typer.Option(metavar="SECONDS", help="Shortest wait before a label is sent")
    ] = 0.0,
    label_delay_max: Annotated[
        float, typer.Option(metavar="SECONDS", help="Longest wait before a label is sent")
    ] = 0.0,
    label_noise: Annotated[
        float, typer.Option(metavar="P", help="Chance that a label sent is a wrong class")
    ] = 0.0,
    think_min: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Shortest think time \\[default: 0]"),
    ] = None,
    think_max: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Longest think time \\[default: think-min]"),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            metavar="R",
            help="Open loop: R arrivals per second whatever the answers (at most --users in "
            "flight) instead of users who wait and think",
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", help="Stop after this long \\[default: 60 without --requests]"
        ),
    ] = None,
    requests: Annotated[
        int | None, typer.Option(metavar="N", help="Stop after this many requests")
    ] = None,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Random seed: the same rows, labels, delays, thinks")
    ] = 0,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Longest wait for one answer")
    ] = 10.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="API key or token (operator role for labels over HTTP) \\[env: SHIPYARD_API_KEY]",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write the JSON summary here"),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No live display and no summary table")
    ] = False,
) -> None:
    """Simulated users: each asks for a prediction, may send its true label after a delay,
    then thinks; a live display, and a JSON summary with -o.

    Labels go to POST /v1/feedback (HTTP) or to the MODEL.feedback queue (stream), quoting
    the id each answer carries. Ctrl-C stops the users and sends the labels already due.
    """
    from shipyard.errors import InvalidInputError
    from shipyard.traffic.config import TrafficConfig
    from shipyard.traffic.rows import load_pool
    from shipyard.traffic.runner import Destination

    if drift_at is not None and drift is None:
        raise InvalidInputError("--drift-at needs --drift SCENARIO: the rows to switch to")
    low = think_min if think_min is not None else 0.0
    config = TrafficConfig(
        model=model,
        protocol=protocol,
        users=users,
        rate=rate,
        duration_s=duration,
        requests=requests,
        seed=seed,
        label_probability=label_probability,
        label_delay_min_s=label_delay_min,
        label_delay_max_s=label_delay_max,
        label_noise=label_noise,
        think_min_s=low,
        think_max_s=think_max if think_max is not None else low,
        drift_at_s=(drift_at or 0.0) if drift is not None else None,
        timeout_s=timeout,
    ).check()
    settings = settings_of(ctx)
    key = api_key
    if key is None and settings.api_key is not None:
        key = settings.api_key.get_secret_value()
    pool = load_pool(
        data=data,
        rows=rows,
        label_column=label_column,
        drift=drift,
        drift_strength=drift_strength,
        drift_features=drift_features,
        seed=seed,
    )
    first, *fallbacks = url or [DEFAULT_URL]
    destination = Destination(
        url=first, queue=queue, results=results, api_key=key, fallback_urls=tuple(fallbacks)
    )
    if config.protocol.is_http:
        document = _run(config, pool, destination, quiet)
    else:
        from shipyard.messaging.embedded import broker_url

        if broker is not None:
            settings = settings.model_copy(update={"broker_url": broker})
        with broker_url(settings) as found:
            destination = replace(destination, broker_url=found)
            document = _run(config, pool, destination, quiet)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(document, indent=2) + "\n")
        if not quiet:
            console.print(f"wrote the summary to {output}")
    fatal = document.get("stopped_because")
    if fatal:
        raise InvalidInputError(f"the run stopped early: {fatal}")


def _run(
    config: TrafficConfig, pool: RowPool, destination: Destination, quiet: bool
) -> dict[str, Any]:
    from shipyard.traffic.runner import run_on_uvloop

    return run_on_uvloop(lambda: _traffic(config, pool, destination, quiet))


async def _traffic(
    config: TrafficConfig, pool: RowPool, destination: Destination, quiet: bool
) -> dict[str, Any]:
    from shipyard.traffic.display import show_live, view
    from shipyard.traffic.runner import install_stop, prepared

    loop = asyncio.get_running_loop()
    async with prepared(config, pool, destination) as run:
        where = destination.shown(config.protocol.is_http)
        title = (
            f"{config.users if config.rate is None else f'{config.rate:g}/s'} "
            f"{'users' if config.rate is None else 'arrivals'} → {config.model} over "
            f"{config.protocol.value} at {where}"
        )
        live = None
        if not quiet and console.is_terminal:
            live = asyncio.create_task(show_live(run, console, title))
        remove = install_stop(run.users)
        try:
            await run.users.run()
        finally:
            remove()
            if live is not None:
                live.cancel()
                await asyncio.gather(live, return_exceptions=True)
        now = loop.time()
        document = run.summary(now)
        if run.users.fatal is not None:
            document["stopped_because"] = run.users.fatal
        if not quiet:
            console.print(view(run, now, None, title))
        return document

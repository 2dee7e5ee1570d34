"""``shipyard publish``: a table's rows as input messages on a broker queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from shipyard.cli.context import console, settings_of
from shipyard.data import read_table
from shipyard.errors import InvalidInputError
from shipyard.messaging import open_broker, shown_url
from shipyard.messaging.embedded import broker_url
from shipyard.stream.client import publish_all
from shipyard.stream.messages import encode_rows


def publish(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON Lines file of rows")],
    broker: Annotated[
        str | None,
        typer.Option(
            help="amqp://…, nats://…, redis://… [env: SHIPYARD_BROKER_URL; default: the "
            "embedded NATS server under the home]"
        ),
    ] = None,
    queue: Annotated[str, typer.Option(help="Queue to publish to")] = "transactions",
    id_column: Annotated[
        str, typer.Option(help="Column holding each row's id (made up when absent)")
    ] = "id",
    chunk: Annotated[
        int, typer.Option(min=1, max=100_000, help="Messages per confirmed publish")
    ] = (1000),
    patience: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for room when the queue is full")
    ] = 60.0,
) -> None:
    """Publish each row as a JSON message (its columns plus an ``id``) to QUEUE."""
    settings = settings_of(ctx)
    if broker is not None:
        settings = settings.model_copy(update={"broker_url": broker})
    frame = read_table(file)
    if frame.empty:
        raise InvalidInputError(f"{file} has no rows; nothing to publish")
    _, bodies = encode_rows(frame, id_column)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with broker_url(settings) as url, Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"publishing to {queue}", total=len(bodies))

        async def send() -> None:
            connection = open_broker(url)
            try:
                await publish_all(
                    connection,
                    queue,
                    bodies,
                    chunk=chunk,
                    patience_s=patience,
                    progress=lambda n: bar.advance(task, n),
                )
            finally:
                await connection.close()

        asyncio.run(send())
    console.print(f"published {len(bodies):,} messages to {queue!r} on {shown_url(url)}")

"""``shipyard publish`` and ``shipyard consume``: a table's rows as input messages on a
broker queue; messages (results, dead letters) read back off a queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shipyard.cli.context import console, err_console, settings_of

if TYPE_CHECKING:
    from shipyard.settings import Settings

BrokerOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="amqp://…, nats://…, redis://… \\[env: SHIPYARD_BROKER_URL; default: the "
        "embedded NATS server under the home]",
    ),
]


def publish(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="CSV, Parquet or JSON Lines file of rows")
    ],
    broker: BrokerOption = None,
    queue: Annotated[
        str, typer.Option(metavar="QUEUE", help="Queue to publish to")
    ] = "transactions",
    id_column: Annotated[
        str,
        typer.Option(metavar="COLUMN", help="Column holding each row's id (made up when absent)"),
    ] = "id",
    chunk: Annotated[
        int, typer.Option(metavar="N", min=1, max=100_000, help="Messages per confirmed publish")
    ] = (1000),
    patience: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0, help="How long to wait for room when the queue is full"
        ),
    ] = 60.0,
) -> None:
    """Publish each row as a JSON message (its columns plus an id) to QUEUE."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from shipyard.data import read_table
    from shipyard.errors import InvalidInputError
    from shipyard.messaging import open_broker, shown_url
    from shipyard.messaging.embedded import broker_url
    from shipyard.stream.client import publish_all
    from shipyard.stream.messages import encode_rows

    settings = _with_broker(ctx, broker)
    frame = read_table(file, text_columns=(id_column,))
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


def consume(
    ctx: typer.Context,
    queue: Annotated[
        str,
        typer.Argument(metavar="QUEUE", help="Queue to read, e.g. results or transactions.dead"),
    ],
    broker: BrokerOption = None,
    count: Annotated[int, typer.Option(metavar="N", min=1, help="Most messages to take")] = 10,
    wait: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0, help="How long to wait for a message before stopping"
        ),
    ] = 2.0,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write JSON Lines here instead of printing"
        ),
    ] = None,
) -> None:
    """Take up to COUNT messages off QUEUE (acked: gone from it) and print their bodies."""
    from shipyard.messaging.embedded import broker_url

    settings = _with_broker(ctx, broker)
    with broker_url(settings) as url:
        lines = asyncio.run(_take(url, queue, count, wait))
    if not lines:
        # On stderr: stdout stays the data, empty here, for whoever reads it.
        err_console.print(f"0 messages from {queue!r} within {wait:g} s", soft_wrap=True)
    if output is None:
        for line in lines:
            console.print(line, markup=False, soft_wrap=True)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(f"{line}\n" for line in lines))
    console.print(f"wrote {len(lines):,} messages from {queue!r} to {output}")


async def _take(url: str, queue: str, count: int, wait_s: float) -> list[str]:
    from shipyard.messaging import QueueSpec, open_broker

    connection = open_broker(url)
    lines: list[str] = []
    try:
        await connection.declare(QueueSpec(queue))
        deadline = time.monotonic() + wait_s
        while len(lines) < count and time.monotonic() < deadline:
            deliveries = await connection.consume(queue, count - len(lines), 200)
            lines += [d.body.decode("utf-8", errors="replace") for d in deliveries]
            await connection.ack(queue, deliveries)
            if deliveries:
                deadline = time.monotonic() + wait_s
    finally:
        await connection.close()
    return lines


def _with_broker(ctx: typer.Context, broker: str | None) -> Settings:
    settings = settings_of(ctx)
    if broker is not None:
        settings = settings.model_copy(update={"broker_url": broker})
    return settings

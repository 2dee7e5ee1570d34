"""``shipyard examples``: the packaged examples, listed and copied into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shipyard.cli.context import Command, Group, console
from shipyard.examples import copy_example, example_names, get_example

app = typer.Typer(
    cls=Group, help="List the packaged examples and copy them into a folder.", no_args_is_help=True
)


@app.command("list", cls=Command)
def list_examples() -> None:
    """Every packaged example: its name, what it is and its files."""
    table = Table("name", "description", "files")
    for name in example_names():
        example = get_example(name)
        table.add_row(name, example.description, ", ".join(example.files))
    console.print(table)
    console.print(
        "run one by name: `shipyard pipeline run NAME`; "
        "copy its files here: `shipyard examples copy NAME`",
        soft_wrap=True,
    )


@app.command(cls=Command)
def copy(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Example to copy")],
    destination: Annotated[
        Path | None,
        typer.Argument(metavar="DEST", help="Folder to write into \\[default: examples/NAME]"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace files that differ")] = False,
) -> None:
    """Write an example's spec and request files into a folder."""
    target = destination if destination is not None else Path("examples") / name
    written = copy_example(name, target, force=force)
    console.print(
        f"copied example {name} to {target}: {', '.join(p.name for p in written)}", soft_wrap=True
    )

"""``shipyard keys``: the Ed25519 key pair that signs artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shipyard.cli.context import Command, Group, console, settings_of

app = typer.Typer(cls=Group, help="Manage artifact signing keys.", no_args_is_help=True)


@app.command(cls=Command)
def generate(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Private key file \\[default: the configured signing key]"
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key")] = False,
) -> None:
    """Make a new signing key pair; its .pub file is what verifiers trust."""
    from shipyard.registry import generate_keypair

    target = path or settings_of(ctx).signing_key_path
    pair = generate_keypair(target, force=force)
    console.print(f"private key: {pair.private_path} (keep it secret)")
    console.print(f"public key:  {pair.public_path}")
    console.print(f"key id:      {pair.key_id}")

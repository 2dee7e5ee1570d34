"""``shipyard users``: who may sign in to the server, and the API keys of services."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from shipyard.cli.context import Command, Group, console, err_console, open_registry
from shipyard.errors import InvalidInputError

app = typer.Typer(
    cls=Group, help="Manage server users, their roles and API keys.", no_args_is_help=True
)
api_keys = typer.Typer(cls=Group, help="Manage API keys of services.", no_args_is_help=True)
app.add_typer(api_keys, name="api-key")


def _role(value: str) -> str:
    # Checked here rather than typed as the Role enum: importing the registry for a
    # parameter type would slow down every command's --help.
    from shipyard.registry import Role

    if value not in set(Role):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(Role)}")
    return value


RoleOption = Annotated[
    str,
    typer.Option(
        metavar="ROLE",
        callback=_role,
        help="viewer (read), operator (register, promote), admin (everything, users too)",
    ),
]


@app.command("add", cls=Command)
def add(
    ctx: typer.Context,
    username: Annotated[
        str, typer.Argument(metavar="USERNAME", help="Letters, digits, '-', '_' and '.'")
    ],
    role: RoleOption = "viewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from one line of stdin")
    ] = False,
) -> None:
    """Add a user; the password is asked for (hidden) unless piped with --password-stdin."""
    from shipyard.registry import Role, Users

    password = _read_password(password_stdin)
    with open_registry(ctx) as registry:
        user = Users(registry).add(username, password, Role(role))
    console.print(f"added user {user.username} with role {user.role.value}")


@app.command("list", cls=Command)
def list_users(ctx: typer.Context) -> None:
    """Every user and their role."""
    from shipyard.registry import Users

    with open_registry(ctx) as registry:
        users = Users(registry).list()
    if not users:
        console.print("no users yet; add one with `shipyard users add NAME --role admin`")
        return
    table = Table("username", "role", "created (UTC)")
    for user in users:
        table.add_row(user.username, user.role.value, f"{user.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@app.command("remove", cls=Command)
def remove(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(metavar="USERNAME", help="The user to remove")],
) -> None:
    """Remove a user; tokens already issued to them stay valid until they expire."""
    from shipyard.registry import Users

    with open_registry(ctx) as registry:
        Users(registry).remove(username)
    console.print(f"removed user {username}")


@api_keys.command("create", cls=Command)
def create_key(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="What the key is for, e.g. the service's name"),
    ],
    role: RoleOption = "viewer",
) -> None:
    """Create an API key and print its secret, once."""
    from shipyard.registry import Role, Users

    with open_registry(ctx) as registry:
        key, secret = Users(registry).create_api_key(name, Role(role))
    err_console.print(
        f"[bold yellow]warning:[/] this is the only time the secret of API key {key.name!r} "
        f"(role {key.role.value}) is shown; store it now. Send it as X-API-Key or Bearer.",
        soft_wrap=True,
    )
    console.print(secret, markup=False, soft_wrap=True)


@api_keys.command("list", cls=Command)
def list_keys(ctx: typer.Context) -> None:
    """Every API key: name, first characters, role, whether revoked."""
    from shipyard.registry import Users

    with open_registry(ctx) as registry:
        keys = Users(registry).list_api_keys()
    if not keys:
        console.print("no API keys yet; create one with `shipyard users api-key create NAME`")
        return
    table = Table("name", "prefix", "role", "created (UTC)", "status")
    for key in keys:
        table.add_row(
            key.name,
            f"{key.prefix}…",
            key.role.value,
            f"{key.created_at:%Y-%m-%d %H:%M}",
            "revoked" if key.revoked else "active",
        )
    console.print(table)


@api_keys.command("revoke", cls=Command)
def revoke_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The key to revoke")],
) -> None:
    """Revoke an API key for good; servers stop accepting it within seconds."""
    from shipyard.registry import Users

    with open_registry(ctx) as registry:
        Users(registry).revoke_api_key(name)
    console.print(f"revoked API key {name}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InvalidInputError(
            "no terminal to ask for the password on; pipe it in with --password-stdin"
        )
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password

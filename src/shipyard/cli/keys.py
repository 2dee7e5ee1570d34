"""``shipyard keys``: the Ed25519 key pair that signs artifacts, and the secret key that
encrypts them at rest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shipyard.cli.context import Command, Group, console, err_console, settings_of

app = typer.Typer(
    cls=Group, help="Manage artifact signing and encryption keys.", no_args_is_help=True
)

#: Failures ``keys rotate`` prints one by one; the rest are counted.
SHOWN_FAILURES = 5


@app.command(cls=Command)
def generate(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Private key file \\[default: the configured signing key]"
        ),
    ] = None,
    secret: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Make a secret key that encrypts artifacts at rest, in FILE, instead of a "
            "signing key",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key")] = False,
) -> None:
    """Make a new signing key pair (its .pub file is what verifiers trust), or with
    --secret a secret key that encrypts artifacts at rest."""
    from shipyard.errors import InvalidInputError

    if secret is not None:
        if path is not None:
            raise InvalidInputError(
                "--path names a signing key and --secret a secret key; give one of them"
            )
        _generate_secret(secret, force=force)
        return
    from shipyard.registry import generate_keypair

    target = path or settings_of(ctx).signing_key_path
    pair = generate_keypair(target, force=force)
    console.print(f"private key: {pair.private_path} (keep it secret)")
    console.print(f"public key:  {pair.public_path}")
    console.print(f"key id:      {pair.key_id}")


def _generate_secret(path: Path, *, force: bool) -> None:
    from shipyard.registry.secrets import SETTING, generate_secret_key

    made = generate_secret_key(path, force=force)
    _say(f"secret key: {made.path} (owner-only; keep it secret and backed up)")
    _say(f"key id:     {made.key_id}")
    _say(f"encrypt the artifacts stored so far: shipyard keys rotate --secret {made.path}")
    _say(f"then encrypt new ones with it too:   {SETTING}={made.path.resolve()}")


def _say(line: str) -> None:
    """Print ``line`` as it is: paths and commands unwrapped, brackets not markup."""
    console.print(line, soft_wrap=True, markup=False)


@app.command(cls=Command)
def rotate(
    ctx: typer.Context,
    secret: Annotated[
        Path,
        typer.Option(metavar="FILE", help="The new secret key (from `keys generate --secret`)"),
    ],
    old: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The secret key the artifacts are encrypted with now \\[default: "
            "SHIPYARD_SECRET_KEY; none: they are plain]",
        ),
    ] = None,
) -> None:
    """Re-encrypt every artifact blob with a new secret key (plain blobs too); safe to run
    again after an interruption."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from shipyard.errors import ArtifactError
    from shipyard.registry.artifacts import ArtifactStore
    from shipyard.registry.secrets import SETTING, SecretKey

    settings = settings_of(ctx)
    new = SecretKey.load(secret)
    current = old or settings.secret_key
    previous = None if current is None else SecretKey.load(current)
    store = ArtifactStore(settings.artifacts_path, previous)
    digests = list(store.digests())
    was = "plain" if previous is None else f"key {previous.key_id}"
    _say(f"re-encrypting {len(digests)} blobs under {store.root} ({was}) with key {new.key_id}")
    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("blobs", total=len(digests))
        done = store.reencrypt(new, digests, on_blob=lambda _: bar.advance(task))
    _say(
        f"encrypted {done.encrypted} plain blobs, re-encrypted {done.reencrypted}, skipped "
        f"{done.skipped} already under key {new.key_id}"
    )
    for failure in done.failures[:SHOWN_FAILURES]:
        err_console.print(f"not re-encrypted: {failure}", markup=False)
    if done.failures:
        raise ArtifactError(
            f"{len(done.failures)} of {len(digests)} blobs were left as they were (above); "
            f"give the key they are encrypted with as --old, then run `shipyard keys rotate "
            f"--secret {secret}` again: blobs already under key {new.key_id} are skipped"
        )
    if previous is not None:
        _say(f"key {previous.key_id} no longer reads them; every blob needs key {new.key_id}")
    _say(f"now set {SETTING}={secret.resolve()}")

"""``shipyard models``: list, inspect, promote and roll back registered models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from shipyard.cli.context import Command, Group, console, open_registry
from shipyard.errors import NotFoundError
from shipyard.registry.reference import DEFAULT_ALIAS

if TYPE_CHECKING:
    from shipyard.registry import ModelVersionInfo, Registry

app = typer.Typer(cls=Group, help="Inspect and manage registered models.", no_args_is_help=True)

AliasOption = Annotated[str, typer.Option(metavar="ALIAS", help="Alias to move")]


@app.command("list", cls=Command)
def list_models(ctx: typer.Context) -> None:
    """Every registered model with its latest version and aliases."""
    with open_registry(ctx) as registry:
        models = registry.list_models()
    if not models:
        console.print("no models yet; run `shipyard pipeline run SPEC` or `shipyard demo`")
        return
    table = Table("name", "versions", "latest", "aliases", "created")
    for model in models:
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(model.aliases.items())) or "-"
        table.add_row(
            model.name,
            str(model.version_count),
            f"v{model.latest_version}",
            aliases,
            f"{model.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command(cls=Command)
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="MODEL", help="NAME, NAME:VERSION or NAME@ALIAS")],
) -> None:
    """A model's versions, or one version's metrics, schema, artifact and lineage."""
    from shipyard.registry import ModelRef

    parsed = ModelRef.parse(ref)
    with open_registry(ctx) as registry:
        if parsed.version is None and parsed.alias is None:
            _show_model(registry, parsed.name)
        else:
            _show_version(registry, registry.get_version(parsed))


def _show_model(registry: Registry, name: str) -> None:
    model = registry.get_model(name)
    table = Table("version", "aliases", "format", "metrics", "created", title=f"model {name}")
    for version in registry.list_versions(name):
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in list(version.metrics.items())[:3])
        table.add_row(
            f"v{version.version}",
            ", ".join(version.aliases) or "-",
            version.format,
            metrics,
            f"{version.created_at:%Y-%m-%d %H:%M:%S}",
        )
    if model.description:
        console.print(model.description)
    console.print(table)


def _show_version(registry: Registry, version: ModelVersionInfo) -> None:
    table = Table(show_header=False, title=f"{version.ref}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("aliases", ", ".join(version.aliases) or "-")
    table.add_row("format", version.format)
    table.add_row("manifest", f"sha256:{version.manifest_digest}")
    table.add_row("signed by key", version.key_id)
    table.add_row("created", f"{version.created_at:%Y-%m-%d %H:%M:%S %Z}")
    features = version.input_schema.get("features", [])
    table.add_row("inputs", f"{len(features)} features: {', '.join(features[:6])}…")
    outputs = [o["name"] for o in version.output_schema.get("outputs", [])]
    table.add_row("outputs", ", ".join(outputs))
    for name, value in version.metrics.items():
        table.add_row(name, f"{value:.4f}")
    for key, tag in sorted(version.tags.items()):
        table.add_row(f"tag {key}", tag)
    if version.run_id is not None:
        try:
            run = registry.get_run(version.run_id)
        except NotFoundError:
            pass
        else:
            table.add_row("run", f"{run.id} ({run.spec_name}, {run.status})")
            table.add_row("dataset sha256", run.dataset_sha256 or "-")
            table.add_row("params", str(run.params.get("params", run.params)))
            table.add_row("shipyard", run.package_version or "-")
    console.print(table)


@app.command(cls=Command)
def promote(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="MODEL", help="NAME:VERSION or NAME@ALIAS to promote")
    ],
    alias: AliasOption = DEFAULT_ALIAS,
) -> None:
    """Point an alias (default production) at a version."""
    with open_registry(ctx) as registry:
        version = registry.promote(ref, alias, actor="cli", event=True)
    console.print(f"{version.name}@{alias} → v{version.version}")


@app.command(cls=Command)
def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name")],
    alias: AliasOption = DEFAULT_ALIAS,
) -> None:
    """Move an alias back to the version it pointed to before its last move."""
    with open_registry(ctx) as registry:
        version = registry.rollback(name, alias, actor="cli")
    console.print(f"{version.name}@{alias} rolled back to v{version.version}")

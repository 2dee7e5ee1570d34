"""Queries the ``Registry`` methods share: find, lock, resolve references, build records of
models and versions (runs have theirs in ``runs.py``).

Each takes the caller's session and never commits; the caller's transaction decides.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shipyard.errors import (
    AliasNotFoundError,
    ModelNotFoundError,
    VersionNotFoundError,
)
from shipyard.registry.records import ModelInfo, ModelVersionInfo
from shipyard.registry.reference import ModelRef
from shipyard.registry.tables import (
    AliasEventRow,
    AliasRow,
    ModelRow,
    ModelVersionRow,
    TagRow,
    utcnow,
)


def no_alias_message(name: str, alias: str) -> str:
    """The AliasNotFoundError message, with how to create the alias."""
    return (
        f"no version of {name!r} has alias {alias!r}; promote one with "
        f"`shipyard models promote {name}:N --alias {alias}`"
    )


def find_model(session: Session, name: str, *, lock: bool = False) -> ModelRow:
    """The model row by name; ``ModelNotFoundError`` if there is none."""
    query = select(ModelRow).where(ModelRow.name == name)
    model = session.scalar(query.with_for_update() if lock else query)
    if model is None:
        raise ModelNotFoundError(
            f"no model named {name!r}; list models with `shipyard models list`"
        )
    return model


def lock_or_create_model(session: Session, name: str) -> ModelRow:
    """The model row, locked for update, created first if new."""
    model = session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
    if model is None:
        # A concurrent creator makes this flush fail on the unique name; the caller retries.
        model = ModelRow(name=name, latest_version=0, created_at=utcnow())
        session.add(model)
        session.flush()
    return model


def resolve(
    session: Session, ref: ModelRef, *, lock: bool = False
) -> tuple[ModelRow, ModelVersionRow]:
    """The model and version rows a reference points to."""
    model = find_model(session, ref.name, lock=lock)
    query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id)
    if ref.alias is not None:
        alias = session.scalar(
            select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == ref.alias)
        )
        if alias is None:
            raise AliasNotFoundError(no_alias_message(ref.name, ref.alias))
        query = query.where(ModelVersionRow.id == alias.version_id)
    elif ref.version is not None:
        query = query.where(ModelVersionRow.version == ref.version)
    else:
        query = query.order_by(ModelVersionRow.version.desc()).limit(1)
    row = session.scalar(query)
    if row is None:
        if ref.version is not None:
            raise VersionNotFoundError(
                f"model {ref.name!r} has no version {ref.version}; its latest is "
                f"v{model.latest_version} (see `shipyard models show {ref.name}`)"
            )
        raise VersionNotFoundError(f"model {ref.name!r} has no versions yet; register one")
    return model, row


def move_alias(
    session: Session, model: ModelRow, alias: str, row: ModelVersionRow, actor: str | None
) -> AliasEventRow | None:
    """Point ``alias`` at ``row`` and record the move (returned); no-op (None) if it
    already points there."""
    current = session.scalar(
        select(AliasRow)
        .where(AliasRow.model_id == model.id, AliasRow.alias == alias)
        .with_for_update()
    )
    if current is not None and current.version_id == row.id:
        return None  # already there: not a move, so nothing for history or rollback
    from_version: int | None = None
    if current is None:
        session.add(
            AliasRow(model_id=model.id, alias=alias, version_id=row.id, updated_at=utcnow())
        )
    else:
        from_version = session.scalar(
            select(ModelVersionRow.version).where(ModelVersionRow.id == current.version_id)
        )
        current.version_id = row.id
        current.updated_at = utcnow()
    move = AliasEventRow(
        model_id=model.id,
        alias=alias,
        from_version=from_version,
        to_version=row.version,
        actor=actor,
        at=utcnow(),
    )
    session.add(move)
    session.flush()
    return move


def model_info(session: Session, model: ModelRow) -> ModelInfo:
    """The record of a model with its aliases and version count."""
    aliases = session.execute(
        select(AliasRow.alias, ModelVersionRow.version)
        .join(ModelVersionRow, ModelVersionRow.id == AliasRow.version_id)
        .where(AliasRow.model_id == model.id)
    )
    count = session.scalar(
        select(func.count())
        .select_from(ModelVersionRow)
        .where(ModelVersionRow.model_id == model.id)
    )
    return ModelInfo(
        name=model.name,
        description=model.description,
        latest_version=model.latest_version,
        aliases={alias: version for alias, version in aliases},
        created_at=model.created_at,
        version_count=count or 0,
    )


def version_infos(
    session: Session, name: str, rows: list[ModelVersionRow]
) -> list[ModelVersionInfo]:
    """Records of version rows of model ``name``, with their aliases and tags."""
    ids = [row.id for row in rows]
    aliases: dict[int, list[str]] = {i: [] for i in ids}
    tags: dict[int, dict[str, str]] = {i: {} for i in ids}
    if ids:
        for version_id, alias in session.execute(
            select(AliasRow.version_id, AliasRow.alias)
            .where(AliasRow.version_id.in_(ids))
            .order_by(AliasRow.alias)
        ):
            aliases[version_id].append(alias)
        for tag in session.scalars(select(TagRow).where(TagRow.version_id.in_(ids))):
            tags[tag.version_id][tag.key] = tag.value
    return [
        ModelVersionInfo(
            name=name,
            version=row.version,
            aliases=aliases[row.id],
            format=row.format,
            manifest_digest=row.manifest_digest,
            key_id=row.key_id,
            metrics={k: float(v) for k, v in row.metrics.items()},
            input_schema=row.input_schema,
            output_schema=row.output_schema,
            run_id=row.run_id,
            tags=dict(sorted(tags[row.id].items())),
            created_at=row.created_at,
        )
        for row in rows
    ]

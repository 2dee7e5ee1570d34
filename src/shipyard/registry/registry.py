"""The model registry: model versions, aliases, signed artifacts; runs through ``runs``.

``Registry`` is the only entry point other packages use; the runs that register versions are
``Registry.runs`` (``registry/runs.py``), what monitoring keeps is ``Registry.monitoring``
(``registry/monitoring.py``), the retrain locks are ``Registry.retraining``
(``registry/retraining.py``). Every public method runs in its own short transaction, so a
failure leaves nothing half-written; a database that cannot be reached raises
``UnavailableError`` with the password masked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from shipyard import __version__
from shipyard.errors import (
    AliasNotFoundError,
    ArtifactTamperedError,
    ConflictError,
    InvalidInputError,
)
from shipyard.registry.artifacts import (
    ArtifactStore,
    Manifest,
    VerifiedArtifact,
    load_verified,
    profile_digest,
    store_files,
    verify_manifest,
    write_manifest,
)
from shipyard.registry.checks import check_json, check_metrics
from shipyard.registry.database import WRITE, connect, retrying, unavailable
from shipyard.registry.events import add_event
from shipyard.registry.monitoring import MonitoringStore
from shipyard.registry.queries import (
    find_model,
    lock_or_create_model,
    model_info,
    move_alias,
    no_alias_message,
    resolve,
    version_infos,
)
from shipyard.registry.records import ModelInfo, ModelVersionInfo, RunInfo
from shipyard.registry.reference import DEFAULT_ALIAS, ModelRef, check_name
from shipyard.registry.retraining import RetrainLocks
from shipyard.registry.runs import Runs, find_run
from shipyard.registry.secrets import SecretKey
from shipyard.registry.signing import Signer, TrustedKeys
from shipyard.registry.tables import (
    AliasEventRow,
    ModelRow,
    ModelVersionRow,
    TagRow,
    utcnow,
)
from shipyard.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry:
    """Models, versions, aliases and runs in a database; artifacts in a signed store."""

    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore,
        *,
        signing_key_path: Path,
        trusted_keys_path: Path,
    ) -> None:
        self._engine = engine
        self.store = store
        self.signing_key_path = signing_key_path
        self.trusted_keys_path = trusted_keys_path
        self._signer: Signer | None = None
        self._signer_lock = threading.Lock()
        self.runs = Runs(self.transaction)
        self.monitoring = MonitoringStore(self.transaction)
        self.retraining = RetrainLocks(self.transaction)

    @classmethod
    def open(cls, settings: Settings) -> Registry:
        """Connect to (and migrate) the settings' database and open the artifact store
        (sealed at rest with the settings' secret key, when one is named)."""
        secret = None if settings.secret_key is None else SecretKey.load(settings.secret_key)
        return cls(
            connect(settings.database_url),
            ArtifactStore(settings.artifacts_path, secret),
            signing_key_path=settings.signing_key_path,
            trusted_keys_path=settings.trusted_keys_path,
        )

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                if write:
                    session.connection(execution_options=WRITE)
                yield session
        except (OperationalError, PoolTimeoutError) as error:
            raise unavailable(self._engine.url, error) from error
        except DBAPIError as error:
            if error.connection_invalidated:
                raise unavailable(self._engine.url, error) from error
            raise

    def transaction(self, *, write: bool = False) -> AbstractContextManager[Session]:
        """A session in one transaction on the registry database, for modules beside Registry.

        Committed on a clean exit, rolled back on an error; an unreachable database raises
        ``UnavailableError``. Pass ``write=True`` when the transaction will write.
        """
        return self._transaction(write=write)

    def _retrying(self, work: Callable[[Session], T]) -> T:
        # A unique constraint can fire when two writers create the same model or alias.
        return retrying(self._transaction, work)

    def signer(self) -> Signer:
        """The signing key, generated on first use so a fresh home just works."""
        with self._signer_lock:
            if self._signer is None:
                self._signer = Signer.load(self.signing_key_path, create=True)
            return self._signer

    # -- runs -----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunInfo:
        """One run with its stages and metrics (``runs.get``)."""
        return self.runs.get(run_id)

    def versions_of_runs(self, run_ids: Sequence[str]) -> dict[str, ModelVersionInfo]:
        """The version each of these runs registered, by run id (runs that registered none
        are left out; a run registers at most one)."""
        with self._transaction() as session:
            rows = list(
                session.scalars(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.run_id.in_(list(run_ids)))
                    .order_by(ModelVersionRow.id)
                )
            )
            names: dict[int, str] = {
                model_id: name
                for model_id, name in session.execute(
                    select(ModelRow.id, ModelRow.name).where(
                        ModelRow.id.in_({row.model_id for row in rows})
                    )
                )
            }
            found: dict[str, ModelVersionInfo] = {}
            for row in rows:
                assert row.run_id is not None
                found[row.run_id] = version_infos(session, names[row.model_id], [row])[0]
            return found

    # -- models and versions --------------------------------------------------------------

    def register_version(
        self,
        name: str,
        *,
        files: Mapping[str, bytes],
        format: str,
        input_schema: dict[str, Any],
        output_schema: dict[str, Any],
        metrics: Mapping[str, float],
        reference_profile: dict[str, Any] | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersionInfo:
        """Store and sign the files as the next version of ``name``."""
        check_name(name)
        check_name(format, "artifact format")
        _check_files(files)
        values = check_metrics(metrics)
        check_json(input_schema, "input schema")
        check_json(output_schema, "output schema")
        if reference_profile is not None:
            check_json(reference_profile, "reference profile")
        tag_items = {check_name(k, "tag key"): str(v) for k, v in (tags or {}).items()}
        signer = self.signer()
        # Blobs go in first and outside the transaction: if it then fails they are unreferenced
        # content-addressed files, harmless and reused by the next identical registration.
        entries = store_files(self.store, files)

        def work(session: Session) -> ModelVersionInfo:
            model = lock_or_create_model(session, name)
            if run_id is not None:
                find_run(session, run_id)
            version = model.latest_version + 1
            model.latest_version = version
            now = utcnow()
            if description:
                model.description = description
            manifest = Manifest(
                name=name,
                version=version,
                format=format,
                files=entries,
                input_schema=input_schema,
                output_schema=output_schema,
                metrics=values,
                created_at=now.isoformat(),
                shipyard_version=__version__,
                key_id=signer.key_id,
                reference_profile_sha256=(
                    profile_digest(reference_profile) if reference_profile is not None else None
                ),
            )
            signed = write_manifest(self.store, signer, manifest)
            row = ModelVersionRow(
                model_id=model.id,
                version=version,
                format=format,
                manifest_digest=signed.digest,
                signature=signed.signature,
                key_id=signed.key_id,
                run_id=run_id,
                metrics=values,
                input_schema=input_schema,
                output_schema=output_schema,
                reference_profile=reference_profile,
                created_at=now,
            )
            session.add(row)
            session.flush()
            session.add_all(TagRow(version_id=row.id, key=k, value=v) for k, v in tag_items.items())
            session.flush()
            return version_infos(session, name, [row])[0]

        return self._retrying(work)

    def list_models(self) -> list[ModelInfo]:
        """Every model, by name."""
        with self._transaction() as session:
            models = list(session.scalars(select(ModelRow).order_by(ModelRow.name)))
            return [model_info(session, model) for model in models]

    def get_model(self, name: str) -> ModelInfo:
        """One model by name."""
        check_name(name)
        with self._transaction() as session:
            return model_info(session, find_model(session, name))

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of a model, oldest first."""
        check_name(name)
        with self._transaction() as session:
            model = find_model(session, name)
            rows = session.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.model_id == model.id)
                .order_by(ModelVersionRow.version)
            )
            return version_infos(session, name, list(rows))

    def get_version(self, ref: str | ModelRef) -> ModelVersionInfo:
        """The version a reference resolves to."""
        parsed = ModelRef.parse(ref)
        with self._transaction() as session:
            _, row = resolve(session, parsed)
            return version_infos(session, parsed.name, [row])[0]

    def get_profile(self, ref: str | ModelRef) -> dict[str, Any] | None:
        """The reference profile of the training data, if one was registered, checked
        against the digest in the version's signed manifest.

        A profile that differs from what was signed raises ``ArtifactTamperedError``. A
        version registered before profiles were signed has no digest to check against: its
        profile is returned as stored, with a warning.
        """
        parsed = ModelRef.parse(ref)
        with self._transaction() as session:
            model, row = resolve(session, parsed)
            name, version, profile = model.name, row.version, row.reference_profile
            digest, signature, key_id = row.manifest_digest, row.signature, row.key_id
        manifest = verify_manifest(
            self.store,
            TrustedKeys.load(self.trusted_keys_path),
            manifest_digest=digest,
            signature=signature,
            key_id=key_id,
            name=name,
            version=version,
        )
        signed = manifest.reference_profile_sha256
        if profile is None and signed is None:
            return None
        if signed is None:
            logger.warning("%s:%d's reference profile predates signed profiles", name, version)
            return profile
        if profile is None or profile_digest(profile) != signed:
            raise ArtifactTamperedError(
                f"the reference profile of {name}:{version} is not the one its manifest "
                "signs; it was changed in the database after registration"
            )
        return profile

    def promote(
        self,
        ref: str | ModelRef,
        alias: str = DEFAULT_ALIAS,
        *,
        actor: str | None = None,
        event: bool = False,
    ) -> ModelVersionInfo:
        """Point ``alias`` at the referenced version, recording the move.

        ``event``: also record a ``model.promoted`` event (a person's promotion, by the CLI
        or the HTTP route) in the same transaction, so the loop's timeline shows it; a
        pipeline run's promotion is recorded by its run instead.
        """
        parsed = ModelRef.parse(ref)
        check_name(alias, "alias")

        def work(session: Session) -> ModelVersionInfo:
            model, row = resolve(session, parsed, lock=True)
            move = move_alias(session, model, alias, row, actor)
            if event and move is not None:
                _alias_event(session, model.id, model.name, "model.promoted", move)
            return version_infos(session, model.name, [row])[0]

        return self._retrying(work)

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, *, actor: str | None = None
    ) -> ModelVersionInfo:
        """Move ``alias`` back to the version it pointed to before its latest move.

        The rollback is itself a move, so rolling back twice returns to where you started.
        It is recorded as a ``model.rolled_back`` event (alias, from, to, actor) in the same
        transaction as the move.
        """
        check_name(name)
        check_name(alias, "alias")

        def work(session: Session) -> ModelVersionInfo:
            model = find_model(session, name, lock=True)
            last = session.scalar(
                select(AliasEventRow)
                .where(AliasEventRow.model_id == model.id, AliasEventRow.alias == alias)
                .order_by(AliasEventRow.id.desc())
                .limit(1)
            )
            if last is None:
                raise AliasNotFoundError(no_alias_message(name, alias))
            if last.from_version is None:
                raise ConflictError(
                    f"{name}@{alias} has pointed only at v{last.to_version}, so there is no "
                    f"earlier version to roll back to; promote one instead with "
                    f"`shipyard models promote {name}:N --alias {alias}`"
                )
            _, row = resolve(session, ModelRef(name, last.from_version))
            move = move_alias(session, model, alias, row, actor)
            if move is not None:
                _alias_event(session, model.id, name, "model.rolled_back", move)
            return version_infos(session, name, [row])[0]

        return self._retrying(work)

    def load_artifact(self, ref: str | ModelRef) -> VerifiedArtifact:
        """The version's files, after checking their digests and the manifest's signature.

        The trusted keys folder is read on every call, so a newly trusted ``.pub`` file counts
        at once.
        """
        parsed = ModelRef.parse(ref)
        with self._transaction() as session:
            model, row = resolve(session, parsed)
            name, version = model.name, row.version
            digest, signature, key_id = row.manifest_digest, row.signature, row.key_id
        return load_verified(
            self.store,
            TrustedKeys.load(self.trusted_keys_path),
            manifest_digest=digest,
            signature=signature,
            key_id=key_id,
            name=name,
            version=version,
        )


def _alias_event(
    session: Session, model_id: int, name: str, kind: str, move: AliasEventRow
) -> None:
    """Record an alias move as a loop event, keyed by the move (each move is told once)."""
    evidence = {
        "alias": move.alias,
        "from": move.from_version,
        "to": move.to_version,
        "actor": move.actor,
    }
    add_event(session, model_id, name, move.to_version, kind, f"{kind}:move:{move.id}", evidence)


# -- input checks ---------------------------------------------------------------------------


def _check_files(files: Mapping[str, bytes]) -> None:
    if not files:
        raise InvalidInputError("a model version needs at least one file")
    for file_name, data in files.items():
        check_name(file_name, "artifact file name")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInputError(f"file {file_name!r} must be bytes, not {type(data).__name__}")

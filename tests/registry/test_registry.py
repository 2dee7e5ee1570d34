import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from shipyard.errors import (
    AliasNotFoundError,
    ArtifactError,
    ArtifactTamperedError,
    ConflictError,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    SignatureError,
    UnavailableError,
    VersionNotFoundError,
)
from shipyard.registry import ArtifactStore, ModelRef, Registry, generate_keypair
from shipyard.registry.artifacts import sha256_hex
from shipyard.registry.tables import AliasEventRow
from shipyard.settings import Settings

from .conftest import SCHEMA_IN, register


def _sql(settings: Settings, statement: str, **params: object) -> None:
    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement), params)
    finally:
        engine.dispose()


def alias_moves(registry: Registry) -> list[tuple[str, int | None, int, str | None]]:
    """Every recorded alias move, oldest first: (alias, from version, to version, actor)."""
    with registry.transaction() as session:
        events = session.scalars(select(AliasEventRow).order_by(AliasEventRow.id))
        return [(e.alias, e.from_version, e.to_version, e.actor) for e in events]


def test_a_fresh_home_just_works(registry: Registry, settings: Settings) -> None:
    version = register(registry)
    assert version.ref == "fraud:1"
    assert settings.signing_key_path.exists()
    assert version.key_id == registry.signer().key_id
    assert registry.load_artifact("fraud").files == {"model.onnx": b"model-bytes"}


def test_versions_are_monotonic_and_never_reused(registry: Registry) -> None:
    assert [register(registry, payload=bytes([i])).version for i in range(3)] == [1, 2, 3]
    assert register(registry, "other").version == 1
    with pytest.raises(NotFoundError, match="no run"):
        register(registry, run_id="missing")
    with pytest.raises(InvalidInputError, match="finite"):
        register(registry, metrics={"f1": float("nan")})
    with pytest.raises(NotFoundError, match="no run"):
        register(registry, "ghost", run_id="missing")
    assert [m.name for m in registry.list_models()] == ["fraud", "other"]
    assert registry.get_model("fraud").latest_version == 3
    assert register(registry).version == 4
    assert [v.version for v in registry.list_versions("fraud")] == [1, 2, 3, 4]
    model = registry.get_model("fraud")
    assert (model.latest_version, model.version_count) == (4, 4)
    assert registry.get_version("fraud").version == 4


def test_register_records_everything(registry: Registry) -> None:
    run_id = registry.runs.start("spec", "name: spec", {"a": 1}, "ab" * 32)
    version = register(
        registry,
        run_id=run_id,
        tags={"team": "risk"},
        description="catches fraud",
        reference_profile={"features": {"a": {"mean": 1.0}}},
    )
    assert version.run_id == run_id
    assert version.tags == {"team": "risk"}
    assert version.input_schema == SCHEMA_IN
    assert version.metrics == {"average_precision": 0.8}
    assert version.format == "onnx"
    assert version.created_at.tzinfo is not None
    assert registry.get_model("fraud").description == "catches fraud"
    assert registry.get_profile("fraud:1") == {"features": {"a": {"mean": 1.0}}}
    assert register(registry).version == 2
    assert registry.get_profile("fraud:2") is None
    assert register(registry, tags={"team": "ops", "stage": "canary"}).tags == {
        "stage": "canary",
        "team": "ops",
    }
    assert registry.get_version("fraud:3").tags == {"stage": "canary", "team": "ops"}


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"name": "bad name"}, "model name"),
        ({"files": {}}, "at least one file"),
        ({"files": {"../x": b""}}, "file name"),
        ({"format": ""}, "format"),
        ({"input_schema": {"x": float("inf")}}, "input schema"),
        ({"tags": {"bad key": "v"}}, "tag key"),
    ],
)
def test_invalid_registrations_write_nothing(
    registry: Registry, arguments: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        register(registry, **arguments)  # type: ignore[arg-type]
    assert registry.list_models() == []


def test_get_version_errors_name_what_is_missing(registry: Registry) -> None:
    register(registry)
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        registry.get_version("nope")
    with pytest.raises(ModelNotFoundError):
        registry.get_model("nope")
    with pytest.raises(VersionNotFoundError, match="no version 9; its latest is v1"):
        registry.get_version("fraud:9")
    with pytest.raises(AliasNotFoundError) as raised:
        registry.get_version(ModelRef("fraud", alias="production"))
    assert str(raised.value) == (
        "no version of 'fraud' has alias 'production'; promote one with "
        "`shipyard models promote fraud:N --alias production`"
    )
    with pytest.raises(InvalidInputError):
        registry.get_version("fraud:x")


def test_promote_rollback_and_history(registry: Registry) -> None:
    for _ in range(3):
        register(registry)
    assert registry.promote("fraud:1", actor="alice").aliases == ["production"]
    registry.promote("fraud:2", actor="bob")
    registry.promote("fraud:2")  # already there: not a move
    registry.promote("fraud@production", "staging")
    registry.promote("fraud:3", "staging")
    assert registry.get_version("fraud@production").version == 2
    assert registry.get_model("fraud").aliases == {"production": 2, "staging": 3}
    assert registry.get_version("fraud:1").aliases == []

    rolled = registry.rollback("fraud", actor="carol")
    assert rolled.version == 1
    assert rolled.aliases == ["production"]
    assert registry.get_version("fraud@staging").version == 3
    moves = alias_moves(registry)
    assert [m for m in moves if m[0] == "production"] == [
        ("production", None, 1, "alice"),
        ("production", 1, 2, "bob"),
        ("production", 2, 1, "carol"),
    ]
    assert len(moves) == 5
    assert registry.rollback("fraud", "staging").version == 2
    assert registry.rollback("fraud").version == 2  # a rollback is a move: this undoes it


def test_rollbacks_and_asked_promotions_are_events(registry: Registry) -> None:
    for _ in range(2):
        register(registry)
    registry.promote("fraud:1", actor="run:abc")  # a run's promotion: its run tells it
    registry.promote("fraud:2", actor="alice", event=True)
    registry.promote("fraud:2", actor="alice", event=True)  # not a move: no event
    registry.rollback("fraud", actor="carol")
    events = registry.monitoring.events("fraud")
    assert [(e.kind, e.version, e.evidence) for e in events] == [
        ("model.promoted", 2, {"alias": "production", "from": 1, "to": 2, "actor": "alice"}),
        ("model.rolled_back", 1, {"alias": "production", "from": 2, "to": 1, "actor": "carol"}),
    ]
    registry.rollback("fraud", actor="carol")  # the same kind again is a new move: told again
    assert [e.kind for e in registry.monitoring.events("fraud")][-1] == "model.rolled_back"
    assert len(registry.monitoring.events("fraud")) == 3


def test_a_refused_rollback_records_no_event(registry: Registry) -> None:
    register(registry)
    registry.promote("fraud:1", event=True)
    with pytest.raises(ConflictError):
        registry.rollback("fraud")
    assert [e.kind for e in registry.monitoring.events("fraud")] == ["model.promoted"]


def test_rollback_without_an_earlier_version_is_a_conflict(registry: Registry) -> None:
    register(registry)
    with pytest.raises(AliasNotFoundError, match="promote"):
        registry.rollback("fraud")
    registry.promote("fraud:1")
    with pytest.raises(ConflictError, match="no earlier version") as raised:
        registry.rollback("fraud")
    assert "shipyard models promote fraud:N --alias production" in str(raised.value)
    assert registry.get_version("fraud@production").version == 1
    with pytest.raises(ModelNotFoundError):
        registry.rollback("nope")


def test_failed_promotions_change_nothing(registry: Registry) -> None:
    register(registry)
    registry.promote("fraud:1")
    with pytest.raises(VersionNotFoundError):
        registry.promote("fraud:7")
    with pytest.raises(InvalidInputError):
        registry.promote("fraud:1", "not valid")
    assert registry.get_model("fraud").aliases == {"production": 1}
    assert len(alias_moves(registry)) == 1


def test_artifact_round_trip(registry: Registry) -> None:
    files = {"model.onnx": b"\x00onnx", "extra.json": b"{}"}
    version = register(registry, files=files)
    artifact = registry.load_artifact(version.ref)
    assert artifact.files == files
    assert artifact.manifest_digest == version.manifest_digest
    assert artifact.manifest.name == "fraud"
    assert artifact.manifest.version == 1
    assert artifact.manifest.files["model.onnx"].sha256 == sha256_hex(b"\x00onnx")
    assert artifact.manifest.key_id == version.key_id


def test_flipped_byte_in_a_file_is_refused(registry: Registry) -> None:
    register(registry, payload=b"weights")
    path = registry.store.path_of(sha256_hex(b"weights"))
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactTamperedError, match=r"model\.onnx of fraud:1.*refused"):
        registry.load_artifact("fraud:1")


def test_edited_manifest_is_refused(registry: Registry, settings: Settings) -> None:
    version = register(registry)
    path = registry.store.path_of(version.manifest_digest)
    manifest = json.loads(path.read_bytes())
    manifest["metrics"]["average_precision"] = 0.99
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactTamperedError, match=r"manifest of fraud:1.*refused"):
        registry.load_artifact("fraud:1")
    # Even a consistent forgery (new blob, digest updated in the database) fails the signature.
    forged = registry.store.put(json.dumps(manifest, sort_keys=True).encode())
    _sql(settings, "UPDATE model_versions SET manifest_digest = :d", d=forged)
    with pytest.raises(SignatureError, match=r"fraud:1.*refused"):
        registry.load_artifact("fraud:1")


def test_a_profile_changed_after_registration_is_refused(
    registry: Registry, settings: Settings
) -> None:
    register(registry, reference_profile={"features": {"a": {"mean": 1.0}}})
    _sql(
        settings,
        """UPDATE model_versions SET reference_profile = '{"features": {"a": {"mean": 9.0}}}'""",
    )
    with pytest.raises(ArtifactTamperedError, match=r"reference profile of fraud:1 is not the one"):
        registry.get_profile("fraud:1")
    _sql(settings, "UPDATE model_versions SET reference_profile = NULL")
    with pytest.raises(ArtifactTamperedError, match="reference profile of fraud:1"):
        registry.get_profile("fraud:1")


def test_a_profile_from_before_signed_profiles_is_read_with_a_warning(
    registry: Registry, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    version = register(registry)  # signed without a profile digest, as older versions were
    manifest = json.loads(registry.store.path_of(version.manifest_digest).read_bytes())
    assert "reference_profile_sha256" not in manifest  # old manifests keep their bytes
    _sql(settings, """UPDATE model_versions SET reference_profile = '{"features": {}}'""")
    assert registry.get_profile("fraud:1") == {"features": {}}
    assert "predates signed profiles" in caplog.text


def test_replaced_signature_is_refused(registry: Registry, settings: Settings) -> None:
    register(registry)
    other = registry.signer().sign(b"something else")
    _sql(settings, "UPDATE model_versions SET signature = :s", s=other)
    with pytest.raises(SignatureError, match="does not match"):
        registry.load_artifact("fraud:1")
    _sql(settings, "UPDATE model_versions SET signature = ''")
    with pytest.raises(SignatureError, match="no signature"):
        registry.load_artifact("fraud:1")


def test_untrusted_key_is_refused(registry: Registry, settings: Settings, tmp_path: Path) -> None:
    version = register(registry)
    elsewhere = tmp_path / "trusted"
    generate_keypair(elsewhere / "someone-else.key")
    strict = Settings(
        home=settings.home, database_url=settings.database_url, trusted_keys_dir=elsewhere
    )
    with Registry.open(strict) as verifier, pytest.raises(SignatureError) as raised:
        verifier.load_artifact("fraud:1")
    assert f"signed by key {version.key_id} which is not trusted" in str(raised.value)
    assert str(elsewhere) in str(raised.value)


def test_missing_blob_says_what_to_do(registry: Registry) -> None:
    register(registry, payload=b"weights")
    registry.store.path_of(sha256_hex(b"weights")).unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx of fraud:1.*missing"):
        registry.load_artifact("fraud:1")


def test_concurrent_registrations_get_distinct_versions(registry: Registry) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(index: int) -> None:
        try:
            barrier.wait()
            for round in range(3):
                version = register(registry, "brand-new", payload=bytes([index, round]))
                results.append(version.version)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == list(range(1, 13))
    assert registry.get_model("brand-new").version_count == 12


def test_unreachable_database_during_use_is_unavailable(tmp_path: Path) -> None:
    engine = create_engine(
        "postgresql+psycopg://u:hunter2@127.0.0.1:1/db", connect_args={"connect_timeout": 2}
    )
    registry = Registry(
        engine,
        ArtifactStore(tmp_path / "a"),
        signing_key_path=tmp_path / "k" / "signing.key",
        trusted_keys_path=tmp_path / "k",
    )
    with registry, pytest.raises(UnavailableError) as raised:
        registry.list_models()
    assert "hunter2" not in str(raised.value)
    assert "u:***@127.0.0.1:1/db" in str(raised.value)

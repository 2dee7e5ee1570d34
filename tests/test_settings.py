"""Settings reach child processes whole: ``to_env`` rebuilds every setting in a child,
``child_env`` drops what the parent's environment would wrongly hand down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shipyard.settings import PER_PROCESS, PREFIX, Settings

RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Shipyard, MPI, Prometheus or OpenMP variables, and no ``.env`` file around."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX) or key in RANK_VARIABLES:
            monkeypatch.delenv(key)
    for key in ("PROMETHEUS_MULTIPROC_DIR", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def in_child(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a child builds from ``settings.child_env()`` (and nothing else)."""
    env = settings.child_env()
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def everything_set(tmp_path: Path) -> Settings:
    """Settings with no field at its default."""
    return Settings(
        home=tmp_path / "home",
        database_url="postgresql+psycopg://ops:pa ss@127.0.0.1:5432/shipyard",
        artifacts_dir=tmp_path / "artifacts",
        signing_key=tmp_path / "keys" / "signing.key",
        trusted_keys_dir=tmp_path / "trusted",
        auth_secret=SecretStr('a-long-secret, with "quotes"'),
        api_key=SecretStr("sk_a-key-for-traffic"),
        token_ttl_seconds=60,
        protect_inference=True,
        max_body_bytes=1234,
        max_batch_size=7,
        max_batch_delay_ms=2.5,
        swap_poll_seconds=0.25,
        serve_models=["fraud", "other@staging", "third:2"],
        broker_url="redis://127.0.0.1:6379/0",
        publish_queues=["a", "b.c"],
        prediction_log="sqlite:///predictions.db",
        prediction_log_dir=tmp_path / "predictions",
        prediction_log_retention_days=7.5,
        prediction_log_buffer_rows=10,
        prediction_log_flush_ms=50.0,
        max_feedback_items=50,
        math_threads=3,
        mpi_rank=3,
        prometheus_multiproc_dir=tmp_path / "metrics",
        monitor_interval_seconds=0.5,
        monitor_lease_ttl_seconds=4.0,
        monitor_history_seconds=5.0,
        monitor_history_days=3.0,
        feedback_window_hours=1.5,
        feedback_retention_days=12.0,
        monitor_index_rows=1000,
        feedback_grace_seconds=0.0,
        retrain_lock_ttl_seconds=5.0,
        scheduler="tcp://127.0.0.1:8786",
        cluster_workers=3,
        image_url_hosts=["images.example.com", "127.0.0.1:8080"],
        image_url_max_bytes=1000,
        image_url_timeout_seconds=2.5,
        image_url_max_redirects=1,
        image_max_pixels=4096,
        secret_key=tmp_path / "keys" / "artifacts.secret",
        stage_queue_prefix="stages",
        stage_redelivery_ms=2000.0,
        stage_lease_seconds=10.0,
        stage_max_deliveries=3,
        stage_defer_seconds=0.5,
        pipeline_submit=True,
    )


def test_every_field_has_a_non_default_value_in_the_sample(tmp_path: Path) -> None:
    """The round trip below covers each field (add it to ``everything_set`` when this fails)."""
    sample, default = everything_set(tmp_path), Settings(home=tmp_path / "default")
    same = [n for n in Settings.model_fields if getattr(sample, n) == getattr(default, n)]
    assert same == []


def test_a_child_rebuilds_every_setting(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = everything_set(tmp_path)
    child = in_child(original, clean_env)
    for name in Settings.model_fields:
        if name not in PER_PROCESS:
            assert getattr(child, name) == getattr(original, name), name
    assert child.auth_secret is not None
    assert child.auth_secret.get_secret_value() == 'a-long-secret, with "quotes"'


def test_a_child_rebuilds_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    original = Settings()
    assert in_child(original, clean_env) == original


def test_to_env_carries_every_field_but_the_per_process_ones(tmp_path: Path) -> None:
    env = everything_set(tmp_path).to_env()
    for name in Settings.model_fields:
        if name in PER_PROCESS:
            assert not set(env) & set(RANK_VARIABLES)
        elif name == "prometheus_multiproc_dir":  # the variable prometheus-client reads
            assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
        else:
            assert f"{PREFIX}{name.upper()}" in env, name
    assert env["SHIPYARD_SERVE_MODELS"] == '["fraud", "other@staging", "third:2"]'
    assert env["SHIPYARD_PROTECT_INFERENCE"] == "true"
    assert env["SHIPYARD_AUTH_SECRET"] == 'a-long-secret, with "quotes"'


def test_a_child_never_inherits_the_parents_mpi_rank(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PMI_RANK", "2")
    parent = Settings()
    assert parent.mpi_rank == 2
    assert in_child(parent, clean_env).mpi_rank is None


def test_child_env_keeps_the_rest_and_drops_what_settings_read(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "OMP_NUM_THREADS": "4",  # not a setting's variable: the child's libraries read it
        "SHIPYARD_LEFTOVER": "x",
        "shipyard_home": "/elsewhere",
        "OMPI_COMM_WORLD_RANK": "1",
        "PMI_RANK": "1",
        "SHIPYARD_MPI_RANK": "1",
        "PROMETHEUS_MULTIPROC_DIR": "/stale",
        "SHIPYARD_PROMETHEUS_DIR": "/stale",
    }
    env = Settings(home=tmp_path, math_threads=2).child_env(base)
    assert env["PATH"] == "/usr/bin"
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["SHIPYARD_MATH_THREADS"] == "2"
    assert env["SHIPYARD_HOME"] == str(tmp_path)
    for gone in ("SHIPYARD_LEFTOVER", "shipyard_home", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        assert gone not in env
    assert "SHIPYARD_MPI_RANK" not in env
    assert "PROMETHEUS_MULTIPROC_DIR" not in env  # None here: not the parent's stale one
    assert "SHIPYARD_PROMETHEUS_DIR" not in env


def test_math_threads_follow_the_users_openmp_variable(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings().math_threads == 1
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert Settings().math_threads == 3
    clean_env.setenv("SHIPYARD_MATH_THREADS", "2")
    assert Settings().math_threads == 2
    clean_env.delenv("SHIPYARD_MATH_THREADS")
    for unusable in ("4,2", "", "0", "many"):  # OpenMP's own forms and mistakes: the default
        clean_env.setenv("OMP_NUM_THREADS", unusable)
        assert Settings().math_threads == 1


def test_a_bad_math_thread_count_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHIPYARD_MATH_THREADS", "0")
    with pytest.raises(ValidationError, match="math_threads"):
        Settings()

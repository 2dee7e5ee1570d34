from datetime import UTC, datetime

import pytest

from shipyard.errors import ConflictError, InvalidInputError, NotFoundError
from shipyard.registry import Registry, Runs


def test_a_registry_hands_out_its_runs(registry: Registry) -> None:
    assert isinstance(registry.runs, Runs)
    run_id = registry.runs.start("spec", "", {})
    assert registry.get_run(run_id) == registry.runs.get(run_id)


def test_runs_record_stages_metrics_and_status(registry: Registry) -> None:
    runs = registry.runs
    first = runs.start("spec", "name: spec", {"p": [1, 2]})
    started = datetime(2026, 1, 1, 12, tzinfo=UTC)
    runs.record_stage(first, "ingest", "succeeded", started, 0.5)
    runs.record_stage(first, "train", "failed", started, 1.5, "ValueError: bad")
    runs.set_dataset(first, "cd" * 32)
    runs.log_metrics(first, {"f1": 0.5, "auc": 0.7})
    runs.log_metrics(first, {"f1": 0.6})
    runs.finish(first, "failed", "train: ValueError: bad")
    second = runs.start("other", "", {}, "ab" * 32)

    run = runs.get(first)
    assert run.id == first
    assert run.spec_name == "spec"
    assert run.status == "failed"
    assert run.error == "train: ValueError: bad"
    assert run.params == {"p": [1, 2]}
    assert run.dataset_sha256 == "cd" * 32
    assert run.metrics == {"auc": 0.7, "f1": 0.6}
    assert [(s.name, s.status, s.duration_s, s.error) for s in run.stages] == [
        ("ingest", "succeeded", 0.5, None),
        ("train", "failed", 1.5, "ValueError: bad"),
    ]
    assert run.stages[0].started_at == started
    assert run.finished_at is not None
    assert run.package_version
    other = runs.get(second)
    assert (other.status, other.dataset_sha256, other.finished_at) == ("running", "ab" * 32, None)
    assert other.stages == []
    assert other.metrics == {}


def test_run_errors(registry: Registry) -> None:
    runs = registry.runs
    with pytest.raises(NotFoundError, match="no run"):
        runs.get("missing")
    with pytest.raises(NotFoundError):
        runs.finish("missing", "succeeded")
    with pytest.raises(NotFoundError):
        runs.log_metrics("missing", {"f1": 0.5})
    run_id = runs.start("s", "", {})
    with pytest.raises(InvalidInputError, match="succeeded"):
        runs.finish(run_id, "done")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="timezone"):
        runs.record_stage(run_id, "x", "succeeded", datetime(2026, 1, 1), 1.0)
    with pytest.raises(InvalidInputError, match="JSON"):
        runs.start("s", "", {"x": object()})
    with pytest.raises(InvalidInputError, match="finite"):
        runs.log_metrics(run_id, {"f1": float("inf")})
    assert runs.get(run_id).stages == []
    assert runs.get(run_id).metrics == {}


def test_a_queued_or_failed_run_reopens_and_keeps_its_stages(registry: Registry) -> None:
    runs = registry.runs
    queued = runs.start("spec", "name: spec", {}, status="queued")
    assert runs.get(queued).status == "queued"
    assert runs.reopen(queued).status == "queued"  # as it was
    assert runs.get(queued).status == "running"
    runs.record_stage(queued, "ingest", "failed", datetime.now(UTC), 0.1, "OSError: gone")
    runs.finish(queued, "failed", "ingest: OSError: gone")
    runs.reopen(queued)
    again = runs.get(queued)
    assert (again.status, again.error, again.finished_at) == ("running", None, None)
    assert [s.status for s in again.stages] == ["failed"]
    runs.finish(queued, "succeeded")
    with pytest.raises(ConflictError, match="succeeded; only a queued or failed run"):
        runs.reopen(queued)
    running = runs.start("spec", "", {})
    with pytest.raises(ConflictError, match="is running"):
        runs.reopen(running)
    assert runs.get(running).status == "running"
    with pytest.raises(NotFoundError):
        runs.reopen("missing")
    with pytest.raises(InvalidInputError, match="'running' or 'queued'"):
        runs.start("spec", "", {}, status="failed")  # type: ignore[arg-type]


def test_recent_runs_are_newest_first_and_filter_by_spec(registry: Registry) -> None:
    runs = registry.runs
    ids = [runs.start(name, "", {}) for name in ("a", "b", "a")]
    assert [run.id for run in runs.recent()] == ids[::-1]
    assert [run.id for run in runs.recent("a")] == [ids[2], ids[0]]
    assert [run.id for run in runs.recent(limit=1)] == [ids[2]]
    assert runs.recent("nothing") == []
    with pytest.raises(InvalidInputError, match="at least 1"):
        runs.recent(limit=0)


def test_a_runs_learners_are_kept_per_fingerprint_and_its_params_updated(
    registry: Registry,
) -> None:
    runs = registry.runs
    run_id = runs.start("houses", "", {"cluster": "local (2 workers)", "model": "tree"})
    runs.add_learner(run_id, "f" * 64, 3, "a" * 64)
    runs.add_learner(run_id, "f" * 64, 3, "a" * 64)  # a result delivered twice
    runs.add_learner(run_id, "f" * 64, 0, "b" * 64)
    runs.add_learner(run_id, "e" * 64, 1, "c" * 64)  # another recipe or data
    assert runs.learners(run_id, "f" * 64) == {0: "b" * 64, 3: "a" * 64}
    assert runs.learners(run_id, "d" * 64) == {}
    runs.update_params(run_id, {"cluster": "2 workers at tcp://127.0.0.1:1"})
    assert runs.get(run_id).params == {"cluster": "2 workers at tcp://127.0.0.1:1", "model": "tree"}
    with pytest.raises(NotFoundError):
        runs.learners("nosuchrun", "f" * 64)

"""Stage claims: one worker at a time holds a run's stage, by a lease in the database."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shipyard.errors import InvalidInputError, LeaseLostError, NotFoundError
from shipyard.registry import Registry


def test_a_claim_runs_the_stage_once_and_then_hands_its_outputs(registry: Registry) -> None:
    runs = registry.runs
    run_id = runs.start("spec", "", {}, status="queued")
    claim = runs.claim_stage(run_id, "ingest", "host:1", 30)
    assert claim.outcome == "claimed"
    assert claim.attempts == 1
    assert runs.get(run_id).status == "running"  # the first stage starts the queued run
    stage = runs.get(run_id).stages[0]
    assert (stage.name, stage.status, stage.worker, stage.attempts) == (
        "ingest",
        "running",
        "host:1",
        1,
    )
    # While host:1 holds it, a redelivered event finds it busy, even in host:1 itself.
    assert runs.claim_stage(run_id, "ingest", "host:2", 30).outcome == "busy"
    assert runs.claim_stage(run_id, "ingest", "host:1", 30).outcome == "busy"
    assert claim.stage_id is not None
    assert runs.renew_stage(claim.stage_id, "host:1", 30)
    assert not runs.renew_stage(claim.stage_id, "host:2", 30)
    runs.end_stage(claim.stage_id, "host:1", "succeeded", 0.25, outputs={"frame": "ab" * 32})
    done = runs.claim_stage(run_id, "ingest", "host:2", 30)
    assert (done.outcome, done.outputs, done.worker) == ("done", {"frame": "ab" * 32}, "host:1")
    stage = runs.get(run_id).stages[0]
    assert (stage.status, stage.duration_s, stage.outputs) == (
        "succeeded",
        0.25,
        {"frame": "ab" * 32},
    )
    runs.finish(run_id, "succeeded")
    assert runs.claim_stage(run_id, "train", "host:2", 30).outcome == "finished"


def test_a_stage_whose_worker_let_go_is_taken_over_and_the_old_worker_cannot_end_it(
    registry: Registry,
) -> None:
    runs = registry.runs
    run_id = runs.start("spec", "", {}, status="queued")
    first = runs.claim_stage(run_id, "train", "host:1", 30)
    assert first.stage_id is not None
    runs.release_stage(first.stage_id, "host:1")  # as an expired lease would
    second = runs.claim_stage(run_id, "train", "host:2", 30)
    assert (second.outcome, second.stage_id, second.attempts) == ("claimed", first.stage_id, 2)
    with pytest.raises(LeaseLostError, match="host:1 no longer holds stage"):
        runs.end_stage(first.stage_id, "host:1", "succeeded", 1.0)
    runs.end_stage(first.stage_id, "host:2", "failed", 1.0, error="ValueError: bad")
    [stage] = runs.get(run_id).stages
    assert (stage.status, stage.worker, stage.attempts, stage.error) == (
        "failed",
        "host:2",
        2,
        "ValueError: bad",
    )


def test_workers_claiming_at_once_get_the_stage_once(registry: Registry) -> None:
    run_id = registry.runs.start("spec", "", {}, status="queued")
    with ThreadPoolExecutor(4) as pool:
        claims = list(
            pool.map(
                lambda i: registry.runs.claim_stage(run_id, "split", f"host:{i}", 30), range(8)
            )
        )
    assert sorted(claim.outcome for claim in claims) == ["busy"] * 7 + ["claimed"]
    assert len(registry.runs.get(run_id).stages) == 1


def test_claims_refuse_unknown_runs_and_bad_leases(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="no run with id 'nope'"):
        registry.runs.claim_stage("nope", "ingest", "host:1", 30)
    run_id = registry.runs.start("spec", "", {})
    with pytest.raises(InvalidInputError, match="more than 0 seconds"):
        registry.runs.claim_stage(run_id, "ingest", "host:1", 0)


def test_ending_a_stage_can_claim_the_next_and_the_last_ends_the_run(registry: Registry) -> None:
    runs = registry.runs
    run_id = runs.start("spec", "", {}, status="queued")
    first = runs.claim_stage(run_id, "ingest", "host:1", 30)
    assert first.stage_id is not None
    following = runs.end_stage(
        first.stage_id,
        "host:1",
        "succeeded",
        0.1,
        claim_next="validate",
        lease_s=30,
        dataset_sha256="cd" * 32,
    )
    assert following is not None
    assert (following.outcome, following.attempts, following.worker) == ("claimed", 1, "host:1")
    assert runs.get(run_id).dataset_sha256 == "cd" * 32
    # The next stage is held: its event, delivered to another worker, finds it busy.
    assert runs.claim_stage(run_id, "validate", "host:2", 30).outcome == "busy"
    assert following.stage_id is not None
    # A failed stage claims nothing.
    assert (
        runs.end_stage(
            following.stage_id,
            "host:1",
            "failed",
            0.1,
            error="boom",
            claim_next="split",
            lease_s=30,
        )
        is None
    )
    assert [(s.name, s.status) for s in runs.get(run_id).stages] == [
        ("ingest", "succeeded"),
        ("validate", "failed"),
    ]
    with pytest.raises(InvalidInputError, match="more than 0 seconds"):
        runs.end_stage(following.stage_id, "host:1", "succeeded", 0.1, claim_next="split")
    # The last stage's end marks the run succeeded in the same transaction.
    last = runs.claim_stage(run_id, "promote", "host:1", 30)
    assert last.stage_id is not None
    assert runs.end_stage(last.stage_id, "host:1", "succeeded", 0.1, last=True) is None
    run = runs.get(run_id)
    assert (run.status, run.finished_at is not None) == ("succeeded", True)
    [*_, promote] = run.stages
    assert (promote.name, promote.status, promote.worker) == ("promote", "succeeded", "host:1")


def test_the_next_stage_held_elsewhere_is_not_claimed_again(registry: Registry) -> None:
    runs = registry.runs
    run_id = runs.start("spec", "", {}, status="queued")
    elsewhere = runs.claim_stage(run_id, "validate", "host:2", 30)
    first = runs.claim_stage(run_id, "ingest", "host:1", 30)
    assert first.stage_id is not None
    following = runs.end_stage(
        first.stage_id, "host:1", "succeeded", 0.1, claim_next="validate", lease_s=30
    )
    assert following is not None
    assert (following.outcome, following.worker) == ("busy", "host:2")
    assert following.lease_expires_at is not None  # how long to hold its event back
    assert (
        datetime.now(UTC) < following.lease_expires_at <= datetime.now(UTC) + timedelta(seconds=30)
    )
    assert elsewhere.outcome == "claimed"

"""Whether a queued or running run's training child is gone, judged only on its own host."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.children import Child
from shipyard.examples import example_spec
from shipyard.pipeline import parse_spec
from shipyard.pipeline.training import TrainingFiles, learners, queue_run, settle
from shipyard.registry import Registry
from shipyard.settings import Settings


@pytest.fixture
def registry(sqlite_settings: Settings) -> Iterator[Registry]:
    with Registry.open(sqlite_settings) as opened:
        yield opened


def queued(registry: Registry) -> str:
    text = example_spec("fraud").read_text()
    return queue_run(registry, parse_spec(text), text)


def own(home: Path, run_id: str, pid: int, host: str | None = None) -> TrainingFiles:
    files = TrainingFiles.of(home, run_id)
    files.owner.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname()}
    files.owner.write_text(json.dumps(owner))
    files.log.write_text("importing\nKilled\n")
    return files


def test_a_queued_run_records_the_params_a_runner_records(registry: Registry) -> None:
    run = registry.runs.get(queued(registry))
    assert run.status == "queued"
    assert run.params["data"] == {"generate": {"dataset": "fraud", "rows": 60000, "seed": 7}}
    assert run.params["model"] == "HistGradientBoostingClassifier"


def test_a_run_whose_child_is_gone_fails_with_the_end_of_its_log(
    registry: Registry, home: Path
) -> None:
    run_id = queued(registry)
    child = Child([sys.executable, "-c", "pass", run_id]).start()
    pid = child.pid
    assert pid is not None
    child.wait(30)
    files = own(home, run_id, pid)
    run = settle(registry, home, registry.runs.get(run_id))
    assert run.status == "failed"
    assert run.error is not None
    assert f"the training process (pid {pid} on {socket.gethostname()}) ended" in run.error
    assert run.error.endswith("importing\nKilled")
    assert not files.owner.exists()


def test_a_live_child_or_another_hosts_child_is_left_alone(registry: Registry, home: Path) -> None:
    run_id = queued(registry)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", run_id]
    with Child(sleeper).start() as child:
        assert child.pid is not None
        own(home, run_id, child.pid)
        assert settle(registry, home, registry.runs.get(run_id)).status == "queued"
    # A pid of another host says nothing here: that host's replica judges it.
    other = queued(registry)
    files = own(home, other, 1, host="elsewhere.example")
    assert settle(registry, home, registry.runs.get(other)).status == "queued"
    assert files.owner.exists()
    # A pid reused by an unrelated process (its command line does not name the run).
    reused = queued(registry)
    own(home, reused, os.getpid())
    assert settle(registry, home, registry.runs.get(reused)).status == "failed"


def test_a_run_started_by_hand_has_no_owner_and_is_left_alone(
    registry: Registry, home: Path
) -> None:
    run_id = queued(registry)
    assert settle(registry, home, registry.runs.get(run_id)).status == "queued"


def test_learners_come_from_an_ensembles_metrics(registry: Registry) -> None:
    run_id = queued(registry)
    assert learners(registry.runs.get(run_id)) is None
    registry.runs.log_metrics(run_id, {"learners": 7, "learners_failed": 1})
    assert learners(registry.runs.get(run_id)) == {"done": 7, "failed": 1}

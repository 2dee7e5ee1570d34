"""Training runs in child processes, for a server that must go on answering while one trains.

A run is recorded ``queued`` (``queue_run``), then ``TrainingProcesses.start`` runs
``shipyard pipeline run SPEC [--data FILE] --resume RUN`` as a child of its own session with
the server's settings; the child carries the queued run on under its id and records every
stage itself. What a run's child needs and leaves is under ``home/runs/``: ``RUN.yaml`` (the
spec text), ``RUN.log`` (its output) and ``RUN.json`` (its owner: pid, host, command).

A child that dies before it records its end (killed, out of memory, a broken install) would
leave its run ``queued`` or ``running`` forever: ``settle`` marks such a run failed with the
end of its log. Only a process on the host that started the child can tell that the child is
gone — replicas on other hosts share the database, not the pids — so ``settle`` judges a run
only when its owner file names this host, and otherwise leaves the run as it is.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.children import Child, log_tail, pid_running
from shipyard.errors import UnavailableError
from shipyard.files import write_whole
from shipyard.pipeline.runner import run_params
from shipyard.pipeline.spec import Spec
from shipyard.registry import Registry, RunInfo
from shipyard.settings import Settings

#: A run's state that a live child may still change.
UNFINISHED = ("queued", "running")
#: Lines of a dead child's log kept in its run's error.
TAIL_LINES = 15


@dataclass(frozen=True)
class TrainingFiles:
    """Where one run's child finds its spec and leaves its log and owner file."""

    spec: Path
    log: Path
    owner: Path

    @classmethod
    def of(cls, home: Path, run_id: str) -> TrainingFiles:
        """The files of run ``run_id`` under ``home/runs``."""
        folder = home / "runs"
        return cls(folder / f"{run_id}.yaml", folder / f"{run_id}.log", folder / f"{run_id}.json")


def queue_run(registry: Registry, spec: Spec, spec_text: str) -> str:
    """Record a queued run of ``spec`` (with its data source already final) and return its
    id; its params are those ``Runner.run`` records, so that a later run — a retrain, an
    empty-bodied ``POST …/runs`` — finds the same data again through ``params["data"]``."""
    return registry.runs.start(spec.name, spec_text, run_params(spec), status="queued")


class TrainingProcesses:
    """The training children this process started, reaped as they end (``reap``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._children: dict[str, Child] = {}
        self._lock = threading.Lock()

    def start(self, registry: Registry, run_id: str, spec_text: str, data: Path | None) -> Child:
        """Start the child that trains queued run ``run_id``; a child that cannot even start
        fails the run at once (``UnavailableError``)."""
        files = TrainingFiles.of(self.settings.home, run_id)
        write_whole(files.spec, spec_text.encode())
        command = [sys.executable, "-m", "shipyard", "pipeline", "run", str(files.spec)]
        if data is not None:
            command += ["--data", str(data)]
        command += ["--resume", run_id]
        # Its own session: a Ctrl-C meant for the server does not stop a training, which
        # outlives the request and even the server that started it.
        child = Child(
            command,
            env=self.settings.child_env(),
            log=files.log,
            new_session=True,
            name=f"the training of run {run_id}",
        )
        try:
            child.start()
        except OSError as error:
            registry.runs.finish(run_id, "failed", f"the training process did not start: {error}")
            raise UnavailableError(
                f"cannot start the training process of run {run_id}: {error}"
            ) from error
        owner = {
            "pid": child.pid,
            "host": socket.gethostname(),
            "command": command,
            "started_at": datetime.now(UTC).isoformat(),
        }
        write_whole(files.owner, json.dumps(owner).encode())
        with self._lock:
            self._children[run_id] = child
        return child

    def reap(self) -> list[str]:
        """Collect the children that have exited (no zombie stays); their run ids."""
        with self._lock:
            ended = [run_id for run_id, child in self._children.items() if not child.running]
            for run_id in ended:
                del self._children[run_id]
        return ended

    def wait(self, timeout_s: float) -> list[str]:
        """Wait at most ``timeout_s`` in all for the children to exit (a run is recorded
        finished a moment before its process ends); ids of the runs whose child still runs."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            children = dict(self._children)
        for child in children.values():
            with contextlib.suppress(TimeoutError):
                child.wait(max(0.0, deadline - time.monotonic()))
        self.reap()
        return self.running()

    def running(self) -> list[str]:
        """Ids of the runs whose child still runs."""
        with self._lock:
            return [run_id for run_id, child in self._children.items() if child.running]


def settle(registry: Registry, home: Path, run: RunInfo) -> RunInfo:
    """``run`` as it stands, after marking it failed (with its log's tail) if it is queued or
    running but the child this host started for it is gone."""
    if run.status not in UNFINISHED:
        return run
    files = TrainingFiles.of(home, run.id)
    owner = _owner(files.owner)
    if owner is None or owner.get("host") != socket.gethostname():
        return run  # not ours to judge: started elsewhere, or by hand
    pid = owner.get("pid")
    # The command line names the run: a pid reused by another process does not count.
    if isinstance(pid, int) and pid_running(pid, named=run.id):
        return run
    # Read again now that the child is known to be gone: it may have finished in between.
    run = registry.runs.get(run.id)
    if run.status in UNFINISHED:
        tail = log_tail(files.log, TAIL_LINES)
        registry.runs.finish(
            run.id,
            "failed",
            f"the training process (pid {pid} on {owner['host']}) ended without finishing "
            f"the run; the end of its log {files.log}:\n{tail}",
        )
        run = registry.runs.get(run.id)
    files.owner.unlink(missing_ok=True)  # judged: a later --resume is not this child's
    return run


def learners(run: RunInfo) -> dict[str, int] | None:
    """An ensemble run's learners ``{"done": …, "failed": …}`` from its metrics ``learners``
    and ``learners_failed``; None for a run that records neither."""
    done, failed = run.metrics.get("learners"), run.metrics.get("learners_failed")
    if done is None and failed is None:
        return None
    return {"done": int(done or 0), "failed": int(failed or 0)}


def _owner(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None

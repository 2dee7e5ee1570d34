"""Replicas behind real nginx, killed under load (issue 12, item 6).

Debian's nginx runs unprivileged-style from a prefix folder, on free 127.0.0.1 ports, with
the shipped ``deploy/nginx/nginx.conf`` (only its listen and upstream ports rewritten), in
front of two real ``shipyard serve`` replicas on one home with fraud@production. Simulated
users (``shipyard traffic``'s engine, closed loop, no think time) send single-row OIP
requests, bounded in count and time:

- a replica is SIGKILLed mid-run: every request sent after the kill is answered (nginx sends
  it, or resends it — ``non_idempotent`` — to the other replica), and under 1 % fail over
  the whole run (only a request in flight at the kill could);
- a second (backup) nginx runs beside the first, and users who know both addresses
  (``shipyard traffic --url A --url B``) keep getting answers when the primary nginx —
  master and workers — is SIGKILLed.

Each test records its figures (``record_property("figure", …)``); the test session prints
them in a "figures" section at its end (``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dask_processes import dask_cluster, houses_spec, learners_stored
from debian_packages import require_tools
from shipyard.children import Child, free_ports, http_ok
from shipyard.registry import Registry, Users
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings
from shipyard.traffic.config import TrafficConfig
from shipyard.traffic.rows import RowPool, load_pool
from shipyard.traffic.runner import Destination, prepared
from shipyard.traffic.users import Answer, Target

from .conftest import DEPLOY

CONFIG = DEPLOY / "nginx" / "nginx.conf"
LISTEN = re.compile(r"^(\s*listen )127\.0\.0\.1:\d+;$", re.M)
UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+((?: [^;\n]*)?);\n", re.M)
USERS = 8
REQUESTS = 3000
KILL_AFTER = 1000  # requests answered or failed before the kill
MAX_SECONDS = 60.0  # a bound, never a pass/fail criterion


def balancer_config(listen: int, replicas: Sequence[int]) -> str:
    """The shipped configuration listening on ``listen``, with one upstream server line per
    replica port (each with the options of the file's first one)."""
    text = CONFIG.read_text()
    servers = UPSTREAM_SERVER.findall(text)
    assert len(LISTEN.findall(text)) == 1, "nginx.conf should have one `listen 127.0.0.1:PORT;`"
    assert servers, "nginx.conf should list its replicas as `server 127.0.0.1:PORT …;`"
    indent, options = servers[0]
    block = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in replicas)
    lines = iter([block])
    text = UPSTREAM_SERVER.sub(lambda _: next(lines, ""), text)
    return LISTEN.sub(rf"\g<1>127.0.0.1:{listen};", text)


@dataclass
class Balancer:
    """One nginx (master and workers, a process group of their own) and its prefix."""

    url: str
    prefix: Path
    child: Child

    def errors(self) -> str:
        """nginx's error log so far."""
        log = self.prefix / "logs" / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture(scope="module")
def nginx() -> str:
    """The path of Debian's nginx (installed when missing)."""
    return require_tools("nginx", "nginx")["nginx"]


@pytest.fixture(scope="module")
def rows() -> RowPool:
    """Fraud rows for the users (few: the test measures failures, not the model)."""
    return load_pool(
        data=None,
        rows=2000,
        label_column=None,
        drift=None,
        drift_strength=None,
        drift_features=None,
        seed=5,
    )


@pytest.fixture
def replicas(trained_model_home: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two ``shipyard serve`` replicas on one copy of the trained home."""
    home = tmp_path / "home"
    shutil.copytree(trained_model_home, home)
    settings = Settings(home=home)
    servers = [ServerProcess(settings, log=tmp_path / f"replica-{number}.log") for number in (1, 2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextmanager
def running_balancers(
    nginx: str, replicas: Sequence[int], folder: Path
) -> Iterator[list[Balancer]]:
    """A primary and a backup nginx, each from its own prefix folder under ``folder``, in
    front of the replicas on ports ``replicas``; stopped (and killed if they linger) after."""
    running: list[Balancer] = []
    try:
        for name, port in zip(("primary", "backup"), free_ports(2), strict=True):
            prefix = folder / name
            (prefix / "logs").mkdir(parents=True)
            (prefix / "tmp").mkdir()
            config = prefix / "nginx.conf"
            config.write_text(balancer_config(port, replicas))
            url = f"http://127.0.0.1:{port}"
            child = Child(
                # Not a daemon: the child is nginx's master, its workers in its group.
                [nginx, "-p", prefix, "-c", config, "-e", "logs/error.log", "-g", "daemon off;"],
                log=prefix / "logs" / "stderr.log",
                extra_logs=[prefix / "logs" / "error.log"],
                new_session=True,
                name=f"the {name} nginx",
            )
            running.append(Balancer(url, prefix, child))
            child.start(http_ok(f"{url}/nginx/health"), timeout_s=30)
        yield running
    finally:
        for balancer in running:
            balancer.child.stop(10, signum=signal.SIGQUIT)  # nginx's graceful shutdown


@pytest.fixture
def balancers(
    nginx: str, replicas: list[ServerProcess], tmp_path: Path
) -> Iterator[list[Balancer]]:
    """A primary and a backup nginx in front of both replicas."""
    with running_balancers(nginx, [r.port for r in replicas], tmp_path) as running:
        yield running


@dataclass
class Sent:
    """One request as the users saw it: when it left, when its answer came, the answer."""

    started: float
    ended: float
    answer: Answer


@dataclass
class Recorded:
    """A target that times every request of the target it wraps."""

    inner: Target
    sent: list[Sent] = field(default_factory=list)

    async def predict(self, row: int, drifted: bool, slot: int) -> Answer:
        started = time.perf_counter()
        answer = await self.inner.predict(row, drifted, slot)
        self.sent.append(Sent(started, time.perf_counter(), answer))
        return answer


@dataclass(frozen=True)
class Outcome:
    """A run with one kill: what was sent, when the kill came, the summary."""

    sent: list[Sent]
    killed_at: float
    summary: dict[str, Any]

    def after(self) -> list[Sent]:
        """Requests sent after the kill."""
        return [s for s in self.sent if s.started > self.killed_at]

    def in_flight(self) -> list[Sent]:
        """Requests sent before the kill and answered (or failed) after it."""
        return [s for s in self.sent if s.started <= self.killed_at < s.ended]

    def failed(self, sent: list[Sent] | None = None) -> list[Sent]:
        """The failed ones of ``sent`` (default: all)."""
        return [s for s in (self.sent if sent is None else sent) if s.answer.failure]

    def figures(self, what: str) -> str:
        """One line for the session's figures section."""
        failed = self.failed()
        kinds = "".join(sorted({f", {s.answer.failure}" for s in failed}))
        return (
            f"{what}: {len(self.sent)} requests, {len(failed)} failed "
            f"({100 * len(failed) / len(self.sent):.2f} %{kinds}); "
            f"{len(self.after())} sent after the kill, {len(self.failed(self.after()))} failed; "
            f"{len(self.in_flight())} in flight at the kill, "
            f"{len(self.failed(self.in_flight()))} failed; "
            f"failovers {self.summary['failovers']}, answered by {self.summary['answered_by']}"
        )


def run_with_a_kill(pool: RowPool, destination: Destination, kill: Any) -> Outcome:
    """Users against ``destination``; ``kill()`` once ``KILL_AFTER`` requests are done."""
    config = TrafficConfig(
        users=USERS, requests=REQUESTS, duration_s=MAX_SECONDS, timeout_s=10.0, seed=1
    )

    async def main() -> Outcome:
        async with prepared(config, pool, destination) as run:
            recorded = Recorded(run.users.target)
            run.users.target = recorded
            killed_at = float("inf")

            async def killer() -> None:
                nonlocal killed_at
                deadline = time.monotonic() + MAX_SECONDS
                while run.users.stats.requests < KILL_AFTER and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
                killed_at = time.perf_counter()
                kill()

            await asyncio.gather(run.users.run(), killer())
            return Outcome(recorded.sent, killed_at, run.summary(time.perf_counter()))

    return asyncio.run(main())


def kill_group(child: Child) -> None:
    """SIGKILL the child's whole process group at once (nginx's master and workers, or a
    server and whatever it started): no process gets to close anything cleanly."""
    assert child.pid is not None
    os.killpg(child.pid, signal.SIGKILL)


@pytest.mark.e2e
def test_a_replica_killed_under_load_loses_no_request_sent_after_the_kill(
    replicas: list[ServerProcess],
    balancers: list[Balancer],
    rows: RowPool,
    record_property: Any,
) -> None:
    primary = balancers[0]
    doomed = replicas[0]
    outcome = run_with_a_kill(
        rows, Destination(url=primary.url), lambda: kill_group(doomed.process)
    )
    doomed.process.kill()  # reaped
    record_property("figure", outcome.figures("replica SIGKILLed behind nginx"))
    print(outcome.figures("replica SIGKILLed behind nginx"))
    errors = primary.errors()
    print(f"nginx's error log:\n{errors[-3000:]}")
    sent, after = outcome.sent, outcome.after()
    assert len(sent) == REQUESTS
    assert len(after) >= (REQUESTS - KILL_AFTER) // 2  # the kill came mid-run
    assert outcome.failed(after) == []  # refused connections: all sent to the other replica
    assert len(outcome.failed()) < 0.01 * len(sent)
    # nginx did meet the dead replica (refused or cut) and passed the requests on.
    assert f"127.0.0.1:{doomed.port}" in errors
    assert outcome.summary["failovers"] == 0  # one address: the client never moved


@pytest.mark.e2e
def test_users_with_both_balancers_keep_getting_answers_when_the_primary_is_killed(
    replicas: list[ServerProcess],
    balancers: list[Balancer],
    rows: RowPool,
    record_property: Any,
) -> None:
    primary, backup = balancers
    destination = Destination(url=primary.url, fallback_urls=(backup.url,))
    outcome = run_with_a_kill(rows, destination, lambda: kill_group(primary.child))
    primary.child.kill()  # reaped
    figures = outcome.figures("primary nginx SIGKILLed, users with both addresses")
    record_property("figure", figures)
    print(figures)
    sent, after = outcome.sent, outcome.after()
    assert len(sent) == REQUESTS
    assert len(after) >= (REQUESTS - KILL_AFTER) // 2
    assert outcome.failed(after) == []
    assert len(outcome.failed()) < 0.01 * len(sent)
    summary = outcome.summary
    assert summary["failovers"] == USERS  # each user moved once, and stayed on the backup
    answered = summary["answered_by"]
    assert set(answered) == {primary.url, backup.url}
    assert answered[backup.url] >= len(after)


# -- a fit started over HTTP, losing a Dask worker and the primary balancer ---------------

FIT_SPEC = houses_spec(
    rows=12000, data_seed=5, learners=24, features=6, seed=2, metrics="r2, rmse, mae"
)
FIT_LEARNERS = 24


def _get_from_either(urls: Sequence[str], path: str) -> tuple[str, httpx.Response]:
    """GET ``path`` from the first balancer that takes the connection (a client that knows
    both addresses); the address that answered and its answer."""
    for url in urls:
        try:
            return url, httpx.get(f"{url}{path}", timeout=30)
        except httpx.TransportError:
            continue
    raise AssertionError(f"no balancer of {list(urls)} answered {path}")


@pytest.mark.e2e
def test_a_fit_over_http_completes_when_a_dask_worker_and_the_primary_nginx_die(
    nginx: str, trained_model_home: Path, tmp_path: Path, record_property: Any
) -> None:
    home = tmp_path / "home"
    shutil.copytree(trained_model_home, home)
    with dask_cluster(tmp_path, "fit") as cluster:
        settings = Settings(home=home, scheduler=cluster.address)
        with Registry.open(settings) as registry:
            key = Users(registry).create_api_key("trainer", "operator")[1]
            servers = [ServerProcess(settings, log=tmp_path / f"fit-{n}.log") for n in (1, 2)]
            try:
                for server in servers:
                    server.start()
                ports = [server.port for server in servers]
                with running_balancers(nginx, ports, tmp_path / "lb") as (primary, backup):
                    urls = (primary.url, backup.url)
                    started = time.monotonic()
                    answer = httpx.post(
                        f"{primary.url}/v1/pipelines/houses/runs",
                        json={"spec": FIT_SPEC},
                        headers={"X-API-Key": key},
                        timeout=30,
                    )
                    assert answer.status_code == 202, answer.text
                    run_id = answer.json()["id"]
                    deadline = time.monotonic() + 120
                    while learners_stored(registry, run_id) < 2:
                        assert time.monotonic() < deadline, "no learner was fitted in 120 s"
                        time.sleep(0.05)
                    kept_before_kills = learners_stored(registry, run_id)
                    cluster.workers[0].kill()  # SIGKILL: its tasks go to the other worker
                    kill_group(primary.child)  # master and workers of the primary nginx
                    primary.child.kill()  # reaped
                    run: dict[str, Any] = {"status": "queued"}
                    answered_by: set[str] = set()
                    deadline = time.monotonic() + 240
                    while run["status"] in ("queued", "running"):
                        assert time.monotonic() < deadline, f"the run is still {run['status']}"
                        url, reply = _get_from_either(urls, f"/v1/pipelines/runs/{run_id}?wait=5")
                        assert reply.status_code == 200, reply.text
                        answered_by.add(url)
                        run = reply.json()
                    seconds = time.monotonic() - started
            finally:
                for server in servers:
                    server.stop()
        figure = (
            f"fit over HTTP ({FIT_LEARNERS} learners) with a Dask worker and the primary nginx "
            f"SIGKILLed after {kept_before_kills} learners: {run['status']} in {seconds:.1f} s, "
            f"learners {run.get('learners')}, followed through {sorted(answered_by)}"
        )
        record_property("figure", figure)
        print(figure)
        assert run["status"] == "succeeded", run.get("error")
        assert run["learners"] == {"done": FIT_LEARNERS, "failed": 0}
        assert run["version"]["ref"] == "houses:1"
        assert answered_by == {backup.url}  # the primary was dead for every read
        assert run["metrics"]["r2"] > 0.5

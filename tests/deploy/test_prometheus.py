"""deploy/prometheus/: promtool accepts the scrape config and the rules, the rules' unit tests
pass, and a real Prometheus (Debian's package) scraping a live ``shipyard serve``, a
``shipyard stream`` pool and a ``shipyard monitor`` under traffic with feedback, drift and a
promotion answers every query of every Grafana dashboard in deploy/grafana with data."""

from __future__ import annotations

import contextlib
import functools
import math
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shipyard.children import Child, free_port, http_ok
from shipyard.data import generate_fraud
from shipyard.data.fraud import drift_fraud
from shipyard.messaging.embedded import broker_url
from shipyard.registry import Registry, Role, Users
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

from .conftest import (
    DASHBOARDS,
    PROMETHEUS,
    Query,
    load_dashboard,
    load_yaml,
    queries,
    rate_interval,
    resolve_variables,
    substitute,
)

CONFIG = PROMETHEUS / "prometheus.yml"
SCRAPE_S = 1  # Prometheus scrapes and evaluates every second here
STEP_S = 1  # the range queries' step, Grafana's $__interval
DEADLINE_S = 120.0  # for every query to have data; a healthy run needs ~15 s
START_TIMEOUT_S = 90.0
MONITOR_METRICS = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
WINDOW_ROWS = 100  # the monitor's count window: drift has a verdict after 100 predictions
FEATURES = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]


def promtool(tools: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run promtool; its output, after checking that it exited 0."""
    done = subprocess.run(
        [tools["promtool"], *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_accepts_the_scrape_config(prometheus_tools: dict[str, str]) -> None:
    out = promtool(prometheus_tools, "check", "config", str(CONFIG))
    assert "SUCCESS" in out
    assert "rules/shipyard.yml" in out  # the rule files the config loads were checked too


def test_promtool_accepts_the_rules(prometheus_tools: dict[str, str]) -> None:
    out = promtool(prometheus_tools, "check", "rules", *map(str, PROMETHEUS.glob("rules/*.yml")))
    assert re.search(r"SUCCESS: \d+ rules found", out)


def test_the_rules_unit_tests_pass(prometheus_tools: dict[str, str]) -> None:
    out = promtool(prometheus_tools, "test", "rules", *map(str, PROMETHEUS.glob("tests/*.yml")))
    assert "SUCCESS" in out


def test_promtool_refuses_a_rule_whose_expression_does_not_parse(
    prometheus_tools: dict[str, str], tmp_path: Path
) -> None:
    """The check the rules pass is a real one: a broken expression fails it."""
    rules = load_yaml(PROMETHEUS / "rules" / "shipyard.yml")
    rules["groups"][0]["rules"][0]["expr"] = 'up{component=~"server"'
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [prometheus_tools["promtool"], "check", "rules", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "unexpected end of input" in done.stdout + done.stderr


# ------------------------------------------------------------------------------ Prometheus


class Prometheus:
    """A Prometheus child on a free 127.0.0.1 port with its own storage, scraping
    deploy/prometheus/prometheus.yml's jobs at the given targets every second."""

    def __init__(self, binary: str, folder: Path, targets: dict[str, list[dict[str, Any]]]):
        folder.mkdir()
        config = load_yaml(CONFIG)
        config["global"].update(
            scrape_interval=f"{SCRAPE_S}s",
            scrape_timeout=f"{SCRAPE_S}s",
            evaluation_interval=f"{SCRAPE_S}s",
        )
        shutil.copytree(PROMETHEUS / "rules", folder / "rules")
        (folder / "targets").mkdir()
        for name, groups in targets.items():
            (folder / "targets" / f"{name}.yml").write_text(yaml.safe_dump(groups))
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.child = Child(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            log=folder / "prometheus.log",
            new_session=True,
            die_with_parent=True,
            name="prometheus",
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.started = 0.0  # when it was ready: the start of every query's time range

    def start(self) -> Prometheus:
        """Start it and wait (bounded) until it is ready."""
        self.child.start(http_ok(f"{self.url}/-/ready"), timeout_s=START_TIMEOUT_S)
        self.started = time.time()
        return self

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        self.http.close()
        self.child.stop(15)

    def api(self, path: str, **params: Any) -> Any:
        """``GET /api/v1/PATH``'s data (asserting that Prometheus says success)."""
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def label_values(self, selector: str, label: str, *, start: float) -> list[str]:
        """What Grafana's ``label_values(selector, label)`` offers."""
        series = self.api("series", **{"match[]": selector, "start": start})
        return sorted({s[label] for s in series if label in s})

    def variables(self, dashboard: dict[str, Any]) -> dict[str, str]:
        """What Grafana substitutes in the dashboard's queries, its variables resolved here."""
        offered = functools.partial(self.label_values, start=self.started)
        return resolve_variables(dashboard, offered) | {
            "__interval": f"{STEP_S}s",
            "__rate_interval": f"{rate_interval(STEP_S, SCRAPE_S):g}s",
            "__range": f"{math.ceil(time.time() - self.started)}s",
        }

    def evaluate(self, query: Query, values: dict[str, str]) -> list[dict[str, Any]]:
        """A dashboard's query as Grafana runs it: over the time since Prometheus started, a
        range query with ``$__interval`` as its step (an annotation's too), or an instant
        query at the end."""
        expr, now = substitute(query.expr, values), time.time()
        if query.instant:
            return list(self.api("query", query=expr, time=now)["result"])
        data = self.api("query_range", query=expr, start=self.started, end=now, step=STEP_S)
        return list(data["result"])

    def diagnostics(self) -> str:
        """The scrape jobs' health and the Shipyard metrics Prometheus has, for a failure."""
        active = self.api("targets")["activeTargets"]
        names = self.api("label/__name__/values", start=self.started)
        return (
            f"\ntargets: {[(t['labels']['job'], t['health']) for t in active]}"
            f"\nmetrics: {', '.join(n for n in names if n.startswith('shipyard_'))}"
        )


# ------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """A live server, scorer pool and monitor on one home, and where their metrics are."""

    settings: Settings
    server: ServerProcess
    key: str
    scorer_metrics: str
    monitor_metrics: str


def _second_version(home: Path) -> None:
    """fraud:2: fraud:1's signed files registered again (a promotion needs another version,
    not a better one); production stays at fraud:1 for now."""
    with Registry.open(Settings(home=home)) as registry:
        first = registry.get_version("fraud:1")
        registry.register_version(
            "fraud",
            files=registry.load_artifact("fraud:1").files,
            format=first.format,
            input_schema=first.input_schema,
            output_schema=first.output_schema,
            metrics=first.metrics,
            reference_profile=registry.get_profile("fraud:1"),
            tags=first.tags,
        )


def _operator_key(settings: Settings) -> str:
    with Registry.open(settings) as registry:
        _, secret = Users(registry).create_api_key("traffic", Role.OPERATOR)
    return secret


def _child(settings: Settings, name: str, *args: str) -> Child:
    return Child(
        [sys.executable, "-m", "shipyard", *args],
        env=settings.child_env(),
        log=settings.home / "logs" / f"{args[0]}.log",
        new_session=True,
        die_with_parent=True,
        name=name,
    )


@contextlib.contextmanager
def live_stack(home: Path) -> Iterator[Stack]:
    """Server, a pool of two scorers and a monitor on the home's embedded broker, started
    side by side."""
    settings = Settings(
        home=home,
        prediction_log_flush_ms=200,
        monitor_interval_seconds=0.5,
        swap_poll_seconds=0.5,
    )
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(broker_url(settings))
        settings = settings.model_copy(update={"broker_url": url})
        key = _operator_key(settings)
        scorer_port = free_port()
        scorer = _child(
            settings,
            "the scorers",
            *("stream", "--model", "fraud", "--workers", "2", "--max-wait-ms", "5"),
            *("--metrics-port", str(scorer_port)),
        )
        monitor = _child(
            settings,
            "the monitor",
            *("monitor", "--models", "fraud", "--window-rows", str(WINDOW_ROWS)),
            *("--metrics-port", "0"),
        )
        for child in (scorer, monitor):
            stack.callback(child.stop, 30)
            child.start()
        server = stack.enter_context(ServerProcess(settings))
        scorer.wait_ready(scorer.logged("shipyard.stream.scorer: scoring ", 2), START_TIMEOUT_S)
        monitor.wait_ready(lambda: MONITOR_METRICS.search(monitor.output()) is not None, 60)
        found = MONITOR_METRICS.search(monitor.output())
        assert found is not None
        yield Stack(
            settings,
            server,
            key,
            f"127.0.0.1:{scorer_port}",
            f"127.0.0.1:{found[1]}",
        )


# ------------------------------------------------------------------------------ traffic


def request(protocol: int, id_: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One row's prediction request over plain JSON, Open Inference Protocol or MLflow."""
    if protocol == 0:
        return "/v1/models/fraud:predict", {"instances": [{"id": id_, **record}]}
    if protocol == 1:
        tensor = {"name": "input", "shape": [1, 30], "datatype": "FP32"}
        return "/v2/models/fraud/infer", {
            "id": id_,
            "inputs": [tensor | {"data": [[*record.values()]]}],
        }
    split = {"columns": ["id", *FEATURES], "data": [[id_, *record.values()]]}
    return "/invocations", {"dataframe_split": split}


class Traffic(threading.Thread):
    """Simulated users until stopped: single-row predictions over the three protocols and
    messages on the broker (through the server's publishing route), every one labelled; a
    few bad requests and bad messages; fraud:2 promoted after ``promote_after`` rows and
    drifted rows (most features moved) after ``drift_after``. Bounded by ``rows``."""

    def __init__(self, stack: Stack, *, rows: int, promote_after: int, drift_after: int):
        super().__init__(daemon=True)
        self.stack = stack
        normal = generate_fraud(drift_after, seed=11, fraud_rate=0.1)
        drifted = drift_fraud(generate_fraud(rows, seed=12, fraud_rate=0.1), "many", seed=1)
        self.rows = pd.concat([normal, drifted[drift_after:]], ignore_index=True)
        self.promote_after = promote_after
        self.promoted = False
        self.stopped = threading.Event()
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.failure: BaseException | None = None

    def stop(self) -> None:
        """Stop after the current batch; re-raise what failed in the thread."""
        self.stopped.set()
        self.join(60)
        if self.failure is not None:
            raise self.failure

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.stack.server.url, timeout=30) as client:
                self._send(client)
        except BaseException as error:  # reported by stop()
            self.failure = error

    def _scored_by_first(self) -> bool:
        """Whether the scorers have scored with fraud:1 yet (so that both versions show)."""
        text = httpx.get(f"http://{self.stack.scorer_metrics}/metrics", timeout=10).text
        return any(
            sample.labels.get("version") == "1" and sample.value > 0
            for family in text_string_to_metric_families(text)
            if family.name == "shipyard_stream_messages_scored"
            for sample in family.samples
        )

    def _post(self, client: httpx.Client, path: str, body: Any, key: bool = False) -> None:
        headers = {"X-API-Key": self.stack.key} if key else {}
        self.statuses[client.post(path, json=body, headers=headers).status_code] += 1

    def _send(self, client: httpx.Client, batch: int = 30) -> None:
        for start in range(0, len(self.rows), batch):
            if self.stopped.is_set():
                return
            if not self.promoted and start >= self.promote_after and self._scored_by_first():
                with Registry.open(self.stack.settings) as registry:
                    registry.promote("fraud:2")
                self.promoted = True
            chunk = self.rows[start : start + batch]
            ids = [f"r{start + i}" for i in range(len(chunk))]
            records = chunk[FEATURES].to_dict("records")
            half = len(chunk) // 2
            for i in range(half):
                self._post(client, *request(i % 3, ids[i], records[i]))
            messages = [{"id": ids[i], **records[i]} for i in range(half, len(chunk))]
            messages.append({"id": f"broken-{start}", "V1": 1.0})  # dead letter: bad_features
            self._post(client, "/v1/queues/transactions/messages", messages, key=True)
            labels = [{"id": i, "label": int(y)} for i, y in zip(ids, chunk["Class"], strict=True)]
            self._post(client, "/v1/feedback", {"model": "fraud", "feedback": labels}, key=True)
            # A row missing features (400), an unknown model (404), feedback without a key (401).
            self._post(client, "/v1/models/fraud:predict", {"instances": [{"V1": 1.0}]})
            self._post(client, "/v1/models/nope:predict", {"instances": records[:1]})
            self._post(client, "/v1/feedback", {"model": "fraud", "feedback": labels[:1]})
            self.sent += len(chunk)


# ------------------------------------------------------------------------------ the test


@pytest.mark.e2e
@pytest.mark.integration
def test_every_dashboard_query_returns_data_from_a_live_stack(
    prometheus_tools: dict[str, str], model_home: Path, tmp_path: Path
) -> None:
    _second_version(model_home)
    with live_stack(model_home) as stack:
        targets = {
            "servers": [{"targets": [f"127.0.0.1:{stack.server.port}"]}],
            "scorers": [{"targets": [stack.scorer_metrics], "labels": {"model": "fraud"}}],
            "monitors": [{"targets": [stack.monitor_metrics]}],
        }
        prometheus = Prometheus(prometheus_tools["prometheus"], tmp_path / "prom", targets)
        traffic = Traffic(stack, rows=6000, promote_after=120, drift_after=240)
        try:
            prometheus.start()
            traffic.start()
            problems = _wait_for_every_panel(prometheus)
            assert not problems, "\n".join(problems) + prometheus.diagnostics()
            for name, url in (
                ("server", f"{stack.server.url}/metrics"),
                ("scorer", f"http://{stack.scorer_metrics}/metrics"),
                ("monitor", f"http://{stack.monitor_metrics}/metrics"),
            ):
                text = httpx.get(url, timeout=10).text
                assert promtool(prometheus_tools, "check", "metrics", stdin=text) == "", name
        finally:
            traffic.stop()
            prometheus.stop()
    assert traffic.statuses[200] > 0
    assert set(traffic.statuses) <= {200, 202, 400, 401, 404}, traffic.statuses


def _wait_for_every_panel(prometheus: Prometheus) -> list[str]:
    """Poll every query of every dashboard until each has data and a few panels show what
    the traffic did, or the deadline passes; what is still missing or wrong."""
    problems: list[str] = []
    deadline = time.monotonic() + DEADLINE_S
    for _ in range(int(DEADLINE_S)):  # ~1 s a round
        problems, shown = [], {}
        for path in DASHBOARDS:
            try:
                values = prometheus.variables(load_dashboard(path))
            except AssertionError as error:  # a variable offers nothing yet
                problems.append(f"{path.name}: {error}")
                continue
            for query in queries(path):
                shown[str(query)] = result = prometheus.evaluate(query, values)
                if not _has_data(result):
                    problems.append(f"no data for {query}: {query.expr}")
        if not problems:
            problems = _what_the_panels_show(shown)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)
    return problems


def _has_data(result: list[dict[str, Any]]) -> bool:
    """Whether a query's result holds at least one finite sample."""
    samples = [v for series in result for v in series.get("values") or [series["value"]]]
    return any(math.isfinite(float(value)) for _, value in samples)


def _what_the_panels_show(shown: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A few panels read for their meaning (the promotion, the errors, the dead letters,
    the drift event, the default window); what differs from the traffic sent."""

    def labels(where: str, label: str) -> set[str]:
        return {series["metric"].get(label, "") for series in shown[where]}

    problems = [
        f"{where}: {label} {labels(where, label)}, expected {values} among them"
        for where, label, values in [
            ("serving.json: panel 'Predictions per second by version' A", "version", {"1", "2"}),
            ("streaming.json: panel 'Results by version' A", "version", {"1", "2"}),
            ("serving.json: panel 'Errors by status' A", "status", {"400", "401", "404"}),
            ("streaming.json: panel 'Dead letters by reason' A", "reason", {"bad_features"}),
            ("model-quality.json: annotation 'Loop events'", "kind", {"drift.detected"}),
        ]
        if not values <= labels(where, label)
    ]
    windows = labels("model-quality.json: panel 'Live $metric vs offline' A", "window")
    if windows != {"rows"}:  # the window variable's default selects one window
        problems.append(f"live performance shows windows {windows}, expected rows only")
    return problems

"""The dashboard in headless Chromium (Debian's ``chromium`` through Playwright) against a
real ``shipyard serve``: predictions, labels and three ``shipyard monitor --once`` passes
(the last on drifted data) make a history; the page must load with no console error and
draw exactly the numbers the JSON routes give; with ``--protect-inference`` it must ask for
a login and then show the same. Screenshots are kept under ``test-artifacts/``.

Chromium is installed with ``apt-get install -y chromium`` (``debian_packages``) when
``/usr/bin/chromium`` is missing; Playwright's own browser downloads are not used. When
``CI`` is set, a browser that cannot be installed or launched fails the test; elsewhere it
is skipped, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from debian_packages import require_tools
from shipyard.data import drift_fraud, generate_fraud
from shipyard.registry import Registry, Users
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

IN_CI = bool(os.environ.get("CI"))
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROWS = 1000  # per pass: a full count window of --window-rows 500, about 20 frauds
PASSES = [("recent", 11, None), ("later", 12, None), ("drifted", 13, "many")]
VIEWER = ("vera", "a viewer password")
WAIT_MS = 60_000  # the longest any page element may take to appear (a shared, busy machine)
FLUSH_MS = 200  # the server's prediction-log flush: the passes wait for it, so keep it short
LOG_WAIT_S = 60  # the longest a pass waits for its rows in the log


def unavailable(message: str) -> None:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium (installed when missing) and Playwright to drive it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        unavailable(f"playwright is not installed ({error}): pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        require_tools("chromium", "chromium")
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing; install it with: apt-get install -y chromium")
    return CHROMIUM


@dataclass
class Browser:
    """One page in a fresh Chromium profile, with what its console said."""

    page: Any
    messages: list[tuple[str, str, str]] = field(default_factory=list)

    def errors(self) -> list[tuple[str, str, str]]:
        """Console errors and uncaught exceptions: (type, text, url)."""
        return [m for m in self.messages if m[0] in ("error", "pageerror")]


@pytest.fixture(scope="module")
def launched(chromium: Path) -> Iterator[Any]:
    """Headless Chromium, started once for the module (each test gets a fresh context);
    fails (CI) or skips when it does not launch."""
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            started = playwright.chromium.launch(
                executable_path=str(chromium), args=LAUNCH_ARGS, headless=True
            )
        except Error as error:
            unavailable(f"Chromium at {chromium} does not start: {error}")
        try:
            yield started
        finally:
            started.close()


@pytest.fixture
def browser(launched: Any) -> Iterator[Browser]:
    """A page in a fresh browser context (no cookies or storage of another test)."""
    context = launched.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        seen = Browser(page)
        page.on(
            "console",
            lambda m: seen.messages.append((m.type, m.text, m.location.get("url", ""))),
        )
        page.on("pageerror", lambda e: seen.messages.append(("pageerror", str(e), "")))
        yield seen
    finally:
        context.close()


def shipyard(home: Path, *args: str) -> str:
    """Run the CLI on ``home``; its output (a failure shows what it said)."""
    done = subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        env={**os.environ, **Settings(home=home).child_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"shipyard {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def logged_rows(client: httpx.Client) -> float:
    """Predictions the server has written to its log (its Prometheus counter)."""
    text = client.get("/metrics").text
    found = re.search(r'^shipyard_prediction_log_rows_total\{model="fraud"\} (\S+)', text, re.M)
    return float(found[1]) if found else 0.0


def predict_label_and_monitor(home: Path, client: httpx.Client, tmp_path: Path) -> list[str]:
    """Three passes of predictions over HTTP, their labels, and a monitor pass each."""
    outputs = []
    sent = 0
    for name, seed, drift in PASSES:
        frame = generate_fraud(ROWS, seed=seed, fraud_rate=0.02)
        if drift is not None:
            frame = drift_fraud(frame, drift, seed=seed)
        frame.insert(0, "id", [f"{name}-{i}" for i in range(ROWS)])
        features = [c for c in frame.columns if c not in ("id", "Class")]
        for start in range(0, ROWS, 250):
            part = frame.iloc[start : start + 250]
            rows = part[["id", *features]].to_dict(orient="records")
            answer = client.post("/v1/models/fraud:predict", json={"instances": rows})
            assert answer.status_code == 200, answer.text
        sent += ROWS
        # The server writes its log every FLUSH_MS: wait (bounded) until it holds these rows;
        # a count of requests was no bound in time (600 of them can take less than a flush).
        for _ in range(int(LOG_WAIT_S / 0.05)):
            if logged_rows(client) >= sent:
                break
            time.sleep(0.05)
        assert logged_rows(client) >= sent
        labels = tmp_path / f"{name}-labels.csv"
        pd.DataFrame({"id": frame["id"], "Class": frame["Class"]}).to_csv(labels, index=False)
        shipyard(home, "feedback", str(labels), "--label-column", "Class")
        outputs.append(shipyard(home, "monitor", "--once", "--no-broker", "--window-rows", "500"))
    return outputs


@dataclass
class Served:
    home: Path
    url: str
    outputs: list[str]


@pytest.fixture(scope="module")
def served(trained_model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A real ``shipyard serve`` on a home with fraud:1, three passes of predictions and
    labels behind it, and the monitor's history of them."""
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    shutil.copytree(trained_model_home, home)
    with Registry.open(Settings(home=home)) as registry:
        Users(registry).add(*VIEWER, "viewer")
    settings = Settings(home=home, prediction_log_flush_ms=FLUSH_MS)
    with ServerProcess(settings, log=root / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            outputs = predict_label_and_monitor(home, client, root)
        yield Served(home, server.url, outputs)


def at_ms(text: str) -> datetime:
    """A time as the page has it: to the millisecond (JavaScript dates have no more)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def drawn(page: Any, chart: str, series: str) -> list[tuple[datetime, float]]:
    """The points a chart drew for one series: (time, exact value)."""
    pairs = page.eval_on_selector_all(
        f'svg[data-chart="{chart}"] circle.point[data-series="{series}"]',
        "nodes => nodes.map(n => [n.dataset.x, n.dataset.y])",
    )
    return [(at_ms(x), float(y)) for x, y in pairs]


def expected(points: list[dict[str, Any]], value: Any) -> list[tuple[datetime, float]]:
    """(time, value) of each history point that has a value."""
    pairs = [(at_ms(p["at"]), value(p)) for p in points]
    return [(x, y) for x, y in pairs if y is not None]


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot kept under test-artifacts/ (its path printed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    assert path.stat().st_size > 10_000
    return path


def check_charts(page: Any, history: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The charts draw the history's and the events' numbers, exactly."""
    points = history["points"]
    metric = history["primary"]["metric"]
    assert page.input_value("#metric") == metric
    for kind in ("rows", "time", "all"):
        assert drawn(page, "performance", kind) == expected(
            points, lambda p, k=kind: p["performance"][k]["metrics"].get(metric)
        ), kind
        assert drawn(page, "coverage", kind) == expected(
            points, lambda p, k=kind: p["performance"][k]["coverage"]
        ), kind
    offline = page.eval_on_selector_all(
        'svg[data-chart="performance"] g.reference-line', "nodes => nodes.map(n => n.dataset.y)"
    )
    assert float(offline[0]) == history["offline"][metric]
    assert drawn(page, "drift-share", "share") == expected(
        points, lambda p: p["drift"]["rows"]["share"]
    )
    features = page.eval_on_selector_all(
        'svg[data-chart="drift"] g.line-series', "nodes => nodes.map(n => n.dataset.series)"
    )
    assert len(features) == 9  # the 8 most drifted features and the score
    latest = points[-1]["drift"]["rows"]
    for feature in features:
        statistic = (
            (lambda p, f=feature: p["drift"]["rows"]["score"])
            if feature == "score"
            else (lambda p, f=feature: p["drift"]["rows"]["features"][f])
        )
        assert drawn(page, "drift", feature) == expected(points, statistic), feature
    top = sorted(latest["features"].values(), reverse=True)[:8]
    shown = sorted((latest["features"][f] for f in features if f != "score"), reverse=True)
    assert shown == top  # every rule is a distance (wasserstein): the largest drift most
    kinds = [e["kind"] for e in events]
    assert "drift.detected" in kinds
    listed = page.eval_on_selector_all(
        "#event-list li[data-kind]", "nodes => nodes.map(n => n.dataset.kind)"
    )
    assert listed == kinds[::-1]  # newest first
    on_timeline = page.eval_on_selector_all(
        'svg[data-chart="timeline"] circle.point', "nodes => nodes.map(n => n.dataset.x)"
    )
    assert sorted(at_ms(x) for x in on_timeline) == sorted(at_ms(e["at"]) for e in events)
    markers = page.eval_on_selector_all(
        'svg[data-chart="performance"] g.event-marker', "nodes => nodes.map(n => n.dataset.kind)"
    )
    assert "drift.detected" in markers


def test_the_dashboard_draws_the_monitors_numbers_with_no_console_error(
    served: Served, browser: Browser
) -> None:
    outputs = served.outputs
    assert all(f"{ROWS:,} new predictions" in output for output in outputs), outputs
    assert "drift.detected" not in outputs[0]
    assert "drift.detected" in outputs[-1], outputs
    page = browser.page
    page.goto(f"{served.url}/ui")
    page.wait_for_selector('svg[data-chart="performance"] circle.point')
    with httpx.Client(base_url=served.url, timeout=60) as client:
        history = client.get("/v1/monitoring/models/fraud/versions/1/history").json()
        events = client.get("/v1/monitoring/models/fraud/events").json()["events"]
        sent = sum(
            r["requests"]
            for r in client.get("/v1/server/traffic").json()["routes"]
            if r["route"] == "/v1/models/{name}:predict"
        )
    assert len(history["points"]) == len(PASSES)  # one per monitor pass
    assert page.is_hidden("#login")
    assert page.text_content("#model-list") is not None
    assert "fraud" in page.text_content("#model-list")  # type: ignore[operator]
    row = page.text_content('#versions tr[data-version="1"]') or ""
    assert "production" in row
    assert "drifted" in row
    check_charts(page, history, events)
    # Traffic: the page samples the counters; two samples make the first rates.
    page.wait_for_selector('svg[data-chart="requests"] circle.point')
    tiles = page.eval_on_selector_all(
        "#traffic-tiles .tile",
        "nodes => nodes.map(n => [n.querySelector('.label').textContent, "
        "n.querySelector('.value').textContent])",
    )
    values = dict((label, value) for label, value in tiles)
    assert float(values["inference requests since start"]) >= sent == 12
    assert values["rows predicted by fraud:1"] == str(ROWS * len(PASSES))
    # Requests while the page is open show as a rate and a latency between two samples.
    row = {"inputs": [[0.0] * 30]}
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for _ in range(40):
            assert client.post("/v1/models/fraud:predict", json=row).status_code == 200
    page.wait_for_selector('svg[data-chart="latency"] circle.point[data-series="p99"]')
    [(_, p50), *_] = drawn(page, "latency", "p50")
    [(_, p99), *_] = drawn(page, "latency", "p99")
    assert 0 < p50 <= p99 <= 2500  # ms, within the histogram's buckets
    assert max(y for _, y in drawn(page, "requests", "inference")) > 0
    screenshot(page, "ui-dashboard.png")
    assert browser.errors() == []


def test_a_protected_server_asks_for_a_viewer_login_then_shows_the_same(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    settings = Settings(home=served.home, protect_inference=True)
    with ServerProcess(settings, log=tmp_path / "protected.log") as server:
        page = browser.page
        page.goto(f"{server.url}/ui")
        page.wait_for_selector("#login-form")
        assert page.is_visible("#login")
        assert page.is_hidden("#main")
        screenshot(page, "ui-login.png")
        page.fill("#username", VIEWER[0])
        page.fill("#password", "not the password")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:not(:empty)")
        assert "password" in (page.text_content("#login-error") or "").lower()
        assert page.is_hidden("#main")
        page.fill("#password", VIEWER[1])
        page.click("#login-form button[type=submit]")
        page.wait_for_selector('svg[data-chart="performance"] circle.point')
        assert page.is_hidden("#login")
        assert "signed in as vera" in (page.text_content("#signed-in") or "")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            token = client.post(
                "/v1/auth/token", data={"username": VIEWER[0], "password": VIEWER[1]}
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/v1/server/traffic").status_code == 401
            history = client.get(
                "/v1/monitoring/models/fraud/versions/1/history", headers=headers
            ).json()
            events = client.get("/v1/monitoring/models/fraud/events", headers=headers).json()
        check_charts(page, history, events["events"])
        page.wait_for_selector('svg[data-chart="requests"] circle.point')
        screenshot(page, "ui-protected.png")
        # Only the refused password made an error: the browser logs the 401 of the token route.
        refused = [e for e in browser.errors() if e[2].endswith("/v1/auth/token")]
        assert len(refused) == 1
        assert "401" in refused[0][1]
        assert [e for e in browser.errors() if e not in refused] == []
        page.click("#sign-out")
        assert page.is_visible("#login")
        page.reload()
        page.wait_for_selector("#login-form")
        assert page.is_visible("#login")  # signed out: the token is gone

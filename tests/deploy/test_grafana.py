"""deploy/grafana/: provisioning files Grafana accepts and dashboards that are valid Grafana
JSON on the provisioned datasource (whether their queries return data is
tests/deploy/test_prometheus.py's job)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    BUILTIN_VARIABLES,
    DASHBOARDS,
    GRAFANA,
    PROMETHEUS,
    datasource,
    load_dashboard,
    load_yaml,
    panels,
    queries,
    used_variables,
)

# Grafana 10.4's schema; newer Grafanas migrate it on load, older ones refuse newer ones.
SCHEMA_VERSION = 39
PANEL_TYPES = {"row", "timeseries", "stat", "table", "state-timeline"}


def test_there_are_the_three_dashboards() -> None:
    titles = sorted(load_dashboard(path)["title"] for path in DASHBOARDS)
    assert titles == [
        "Shipyard / Model quality and drift",
        "Shipyard / Serving",
        "Shipyard / Streaming",
    ]


def test_the_datasource_is_the_prometheus_of_deploy_prometheus() -> None:
    source = datasource()
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"].startswith("http://")
    # $__rate_interval is computed from it: it must be the scrape interval.
    scrape = load_yaml(PROMETHEUS / "prometheus.yml")["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape
    # Not the default: provisioning fails when an organisation would get two defaults.
    assert source["isDefault"] is False


def test_the_dashboard_provider_reads_files() -> None:
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "shipyard.yml")["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()
    assert provider["folder"] == "Shipyard"


def test_provisioning_files_have_api_version_1() -> None:
    for path in (GRAFANA / "provisioning").rglob("*.yml"):
        assert load_yaml(path)["apiVersion"] == 1, path


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_json_on_the_provisioned_datasource(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["uid"].startswith("shipyard-")
    assert len(dashboard["uid"]) <= 40  # Grafana's limit
    assert "id" not in dashboard  # provisioning assigns ids; a fixed one collides
    uid = datasource()["uid"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert panel["type"] in PANEL_TYPES, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what it shows"
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
    for query in queries(path):
        assert query.expr.strip(), query
        assert query.datasource == {"type": "prometheus", "uid": uid}, query
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": uid}, variable


def _overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    placed = [panel for panel in load_dashboard(path)["panels"]]
    for panel in placed:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            assert not _overlaps(a["gridPos"], b["gridPos"]), (a["title"], b["title"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_queries_use_only_defined_variables(path: Path) -> None:
    dashboard = load_dashboard(path)
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    for query in queries(path):
        unknown = used_variables(query.expr) - defined - set(BUILTIN_VARIABLES)
        assert not unknown, f"{query} uses undefined {unknown}"
    for panel in panels(dashboard):  # a title may name a variable too
        assert used_variables(panel["title"]) <= defined, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_marks_the_loops_events(path: Path) -> None:
    (events,) = [a for a in load_dashboard(path)["annotations"]["list"] if not a.get("builtIn")]
    assert "shipyard_monitor_events_total" in events["expr"]
    # Generic over the event's kind: retraining's events show without a change here.
    assert "kind" in events["tagKeys"].split(",")
    assert "kind=" not in events["expr"]
    assert events["titleFormat"] == "{{kind}}"


def test_dashboards_are_formatted_as_committed() -> None:
    """Two-space JSON with a final newline, as Grafana's export writes, so diffs stay small."""
    for path in DASHBOARDS:
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=2) + "\n", path.name

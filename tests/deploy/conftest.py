"""What the deploy/ tests share: the files under deploy/, every query of every Grafana
dashboard (panels, annotations, template variables), Grafana's variable substitution, and
Debian's Prometheus tools (installed when missing, see tests/debian_packages.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from debian_packages import require_tools

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's global variables a query may use besides the dashboard's own.
BUILTIN_VARIABLES = ("__rate_interval", "__interval", "__range")
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$", re.S)


def load_yaml(path: Path) -> Any:
    """A YAML file of deploy/."""
    return yaml.safe_load(path.read_text())


def load_dashboard(path: Path) -> dict[str, Any]:
    """A dashboard's JSON."""
    return dict(json.loads(path.read_text()))


def datasource() -> dict[str, Any]:
    """The one datasource Grafana is provisioned with."""
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    (source,) = [s for f in files for s in load_yaml(f)["datasources"]]
    return dict(source)


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard: a panel's target or an annotation."""

    dashboard: str
    where: str  # "panel 'Title' A", "annotation 'Name'"
    expr: str
    instant: bool
    datasource: Mapping[str, Any] | None

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(path: Path) -> list[Query]:
    """Every target of every panel, and every Prometheus annotation, of a dashboard."""
    dashboard = load_dashboard(path)
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append(
                Query(
                    path.name,
                    f"panel {panel['title']!r} {target.get('refId')}",
                    target.get("expr", ""),
                    bool(target.get("instant")) and not target.get("range"),
                    target.get("datasource"),
                )
            )
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        found.append(
            Query(
                path.name,
                f"annotation {annotation['name']!r}",
                annotation.get("expr", ""),
                False,
                annotation.get("datasource"),
            )
        )
    return found


def used_variables(expr: str) -> set[str]:
    """Names of the variables an expression uses (``$x`` and ``${x}`` alike)."""
    return {a or b for a, b in VARIABLE.findall(expr)}


def rate_interval(step_s: float, scrape_s: float) -> float:
    """Grafana's ``$__rate_interval``: max(``$__interval`` + scrape interval, 4 × scrape)."""
    return max(step_s + scrape_s, 4 * scrape_s)


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with each ``$name`` / ``${name}`` replaced by ``values[name]``."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise KeyError(f"{expr!r} uses ${name}, which the dashboard does not define")
        return values[name]

    return VARIABLE.sub(value, expr)


def regex_of(values: list[str]) -> str:
    """A multi-value variable as Grafana formats it for ``=~``: ``(a|b)``, escaped."""
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")"


def resolve_variables(
    dashboard: Mapping[str, Any], label_values: Callable[[str, str], list[str]]
) -> dict[str, str]:
    """Each template variable's substitution, in order (later ones use earlier ones):
    query variables offer what ``label_values(selector, label)`` finds — a multi-value one
    stands for all of them, as "All" does, a single one for its default when offered, else
    the first; custom variables take their default."""
    resolved: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        current = variable.get("current", {}).get("value")
        if variable["type"] == "custom":
            chosen = current if isinstance(current, list) else [current]
            resolved[name] = regex_of(chosen) if variable.get("multi") else chosen[0]
            continue
        assert variable["type"] == "query", f"variable ${name}: unexpected type"
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        parsed = LABEL_VALUES.match(substitute(text, resolved).strip())
        assert parsed is not None, f"variable ${name}: not a label_values() query: {text}"
        offered = label_values(parsed["selector"], parsed["label"])
        assert offered, f"variable ${name} offers no value: {text}"
        if variable.get("multi") or variable.get("includeAll"):
            resolved[name] = regex_of(offered)
        else:
            resolved[name] = current if current in offered else offered[0]
    return resolved


@pytest.fixture(scope="session")
def prometheus_tools() -> dict[str, str]:
    """Paths of ``prometheus`` and ``promtool`` (Debian's package, installed if missing)."""
    return require_tools("prometheus", "prometheus", "promtool")

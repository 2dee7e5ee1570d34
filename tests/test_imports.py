"""What ``src/shipyard`` imports, read with ``ast`` (module level, inside functions and
under ``TYPE_CHECKING`` alike): no import cycle, DESIGN's directions of dependency, and
every third-party package declared in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src"
PACKAGE = "shipyard"
# DESIGN: registry, messaging and data import nothing of the rest; the modules at the
# package's root below them (errors, settings, the private-file writer, child processes)
# are shared by every layer and import none of the layers. Nothing imports the CLI but its
# entry points.
FOUNDATIONS = ("registry", "messaging", "data")
SHARED = {
    "shipyard",
    "shipyard.errors",
    "shipyard.settings",
    "shipyard.files",
    "shipyard.children",
}
CLI_ENTRY_POINTS = {"shipyard.__main__"}
# Between the foundations and the CLI: the inference core knows no adapter, and monitoring
# (prediction log, feedback, drift, the monitor) sits below the server, the stream scorer and
# the pipeline that record into it and store its rules; what it needs of them is handed in.
ABOVE = {
    "inference": ("server", "stream", "pipeline", "monitoring", "traffic"),
    "monitoring": ("server", "stream", "pipeline", "traffic"),
    # Simulated users talk to servers and scorers over HTTP and brokers, like any client.
    "traffic": ("server", "stream"),
}
# Broker clients load when a broker is opened, never for ``shipyard --help`` (start-up time).
BROKER_CLIENTS = ("aio_pika", "aiormq", "pamqp", "nats", "redis")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imported(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every module name the tree imports, absolute, with its line (``from a import b``
    yields ``a.b`` when that is a module of ours, else ``a``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package the module is in
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else base), node.lineno


def _graph() -> dict[str, dict[str, int]]:
    """Module → the modules of ours it imports, with the line of the first import."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: dict[str, int] = {}
        for name, line in _imported(tree, module, path.name == "__init__.py"):
            if (name == PACKAGE or name.startswith(f"{PACKAGE}.")) and name != module:
                edges.setdefault(name, line)
        graph[module] = edges
    return graph


GRAPH = _graph()


def _cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_graph_sees_the_imports_it_must() -> None:
    """A guard on the reader itself: a lazy import inside a function counts."""
    assert "shipyard.messaging.broker" in GRAPH["shipyard.messaging"]
    assert "shipyard.errors" in GRAPH["shipyard.messaging.backends"]
    assert len(GRAPH) > 50


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": 1}, "b": {}}) is None


def test_src_has_no_import_cycle() -> None:
    cycle = _cycle(GRAPH)
    if cycle is not None:
        steps = [
            f"{MODULES[a].relative_to(ROOT)}:{GRAPH[a][b]} imports {b}"
            for a, b in itertools.pairwise(cycle)
        ]
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


@pytest.mark.parametrize("layer", FOUNDATIONS)
def test_foundations_import_nothing_of_the_rest(layer: str) -> None:
    prefix = f"{PACKAGE}.{layer}"
    wrong = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        for module, edges in GRAPH.items()
        if module == prefix or module.startswith(f"{prefix}.")
        for target, line in edges.items()
        if target not in SHARED and not (target == prefix or target.startswith(f"{prefix}."))
    ]
    assert not wrong, f"{prefix} may import only itself and {sorted(SHARED)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_layers_import_nothing_above_them(layer: str) -> None:
    prefix = f"{PACKAGE}.{layer}"
    above = tuple(f"{PACKAGE}.{name}" for name in ABOVE[layer])
    wrong = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        for module, edges in GRAPH.items()
        if module == prefix or module.startswith(f"{prefix}.")
        for target, line in edges.items()
        if any(target == name or target.startswith(f"{name}.") for name in above)
    ]
    assert not wrong, f"{prefix} may not import {', '.join(above)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(SHARED - {PACKAGE}))
def test_shared_modules_import_only_each_other(module: str) -> None:
    wrong = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        for target, line in GRAPH.get(module, {}).items()
        if target.startswith(f"{PACKAGE}.") and target not in SHARED
    ]
    assert not wrong, f"{module} is below every layer:\n" + "\n".join(wrong)


def test_nothing_imports_the_cli() -> None:
    cli = f"{PACKAGE}.cli"
    wrong = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        for module, edges in GRAPH.items()
        if not (module == cli or module.startswith(f"{cli}.")) and module not in CLI_ENTRY_POINTS
        for target, line in edges.items()
        if target == cli or target.startswith(f"{cli}.")
    ]
    assert not wrong, "\n".join(wrong)


def _third_party() -> dict[str, str]:
    """Top-level modules src/ imports from outside the standard library and the package,
    with where each is first imported."""
    found: dict[str, str] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, line in _imported(tree, module, path.name == "__init__.py"):
            top = name.split(".")[0]
            if top and top != PACKAGE and top not in sys.stdlib_module_names:
                found.setdefault(top, f"{path.relative_to(ROOT)}:{line}")
    return found


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """The distributions pyproject.toml's ``dependencies`` and ``vision`` extra name (extras
    of a requirement dropped): ``vision`` is the extra src imports on first use only
    (``model.type: cnn``), with an error naming the extra when it is missing."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    vision = project.get("optional-dependencies", {}).get("vision", [])
    return {
        _normalized(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        for requirement in [*project["dependencies"], *vision]
    }


def test_every_third_party_import_is_a_declared_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    undeclared = []
    for top, where in sorted(_third_party().items()):
        providers = {_normalized(d) for d in distributions.get(top, [])}
        if not providers:
            undeclared.append(f"{top} ({where}): no installed distribution provides it")
        elif not providers & declared:
            undeclared.append(f"{top} ({where}): from {', '.join(sorted(providers))}")
    assert not undeclared, "declare these in pyproject.toml's dependencies:\n" + "\n".join(
        undeclared
    )


def test_help_loads_no_broker_client() -> None:
    """``shipyard --help`` imports no broker client library (read from ``-X importtime``)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", PACKAGE, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()}
    loaded = sorted({name.split(".")[0] for name in imported} & set(BROKER_CLIENTS))
    assert "shipyard.cli" in imported, "the import times were not read"
    assert not loaded, f"shipyard --help imports {loaded}; import them where a broker opens"

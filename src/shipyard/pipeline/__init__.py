"""Pipelines: a YAML spec run stage by stage into a registered, possibly promoted, version.

The names below are imported on first use, so that importing one module of the package
(the server's ``shipyard.pipeline.spec`` or ``.events``) does not import every stage, and
scikit-learn with them (about a second)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.pipeline.ensemble import ClusterOptions
    from shipyard.pipeline.runner import Runner, RunResult, StageTiming
    from shipyard.pipeline.spec import Spec, load_spec, parse_spec
    from shipyard.pipeline.stages import STAGES, Promotion

#: Each name's module in this package.
_MODULES = {
    "STAGES": "stages",
    "ClusterOptions": "ensemble",
    "Promotion": "stages",
    "RunResult": "runner",
    "Runner": "runner",
    "Spec": "spec",
    "StageTiming": "runner",
    "load_spec": "spec",
    "parse_spec": "spec",
}

__all__ = [
    "STAGES",
    "ClusterOptions",
    "Promotion",
    "RunResult",
    "Runner",
    "Spec",
    "StageTiming",
    "load_spec",
    "parse_spec",
]


def __getattr__(name: str) -> Any:
    """Import the module of ``name`` when it is first asked for."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"shipyard.pipeline.{module}"), name)

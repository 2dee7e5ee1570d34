"""Pipelines: a YAML spec run stage by stage into a registered, possibly promoted, version."""

from shipyard.pipeline.ensemble import ClusterOptions
from shipyard.pipeline.runner import Runner, RunResult, StageTiming
from shipyard.pipeline.spec import Spec, load_spec, parse_spec
from shipyard.pipeline.stages import STAGES, Promotion

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

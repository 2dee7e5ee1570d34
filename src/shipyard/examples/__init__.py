"""Example pipeline specs shipped with the package (``examples/`` in the repository links here)."""

from importlib.resources import files
from pathlib import Path


def example_spec(name: str) -> Path:
    """Path of a shipped example spec, e.g. ``example_spec("fraud")``."""
    return Path(str(files(__package__) / name / "pipeline.yaml"))

"""Fixtures of the registry tests: an open registry on each database backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shipyard.registry import ModelVersionInfo, Registry
from shipyard.settings import Settings

SCHEMA_IN: dict[str, Any] = {"features": ["a", "b"], "dtypes": {"a": "float32", "b": "float32"}}
SCHEMA_OUT: dict[str, Any] = {"outputs": [{"name": "label", "dtype": "int64"}]}


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    """A registry on a fresh home, once on SQLite and once on PostgreSQL."""
    with Registry.open(settings) as opened:
        yield opened


def register(
    registry: Registry, name: str = "fraud", payload: bytes = b"model-bytes", **extra: Any
) -> ModelVersionInfo:
    """Register a small fake model version."""
    arguments: dict[str, Any] = {
        "files": {"model.onnx": payload},
        "format": "onnx",
        "input_schema": SCHEMA_IN,
        "output_schema": SCHEMA_OUT,
        "metrics": {"average_precision": 0.8},
    }
    arguments.update(extra)
    return registry.register_version(name, **arguments)

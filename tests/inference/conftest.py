"""Fixtures of the inference tests: small real models, and registries that hold them.

``exported_models`` (root conftest) are two fitted classifiers over ``FEATURES``; ``register``
stores one as the next version of a model in the ``registry`` fixture (SQLite and
PostgreSQL). ``pipeline_home`` is a home whose fraud:1 was trained and promoted by the real
pipeline runner, made once per session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from shipyard.examples import example_spec
from shipyard.inference import ExportedModel, export_model
from shipyard.pipeline import Runner, parse_spec
from shipyard.registry import ModelVersionInfo, Registry
from shipyard.settings import Settings

Register = Callable[..., ModelVersionInfo]
FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="session")
def reordered_model() -> ExportedModel:
    """A classifier over the same features as ``exported_models``, in reverse order
    (``d, c, b, a``) and with other weights: rows decoded in the order of one of those models
    and predicted by this one give other answers."""
    x, y = make_classification(300, len(FEATURES), random_state=2)
    fitted = LogisticRegression().fit(x, y)
    return export_model(fitted, feature_names=FEATURES[::-1], task="classification")


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    """A registry on a fresh home, once on SQLite and once on PostgreSQL."""
    with Registry.open(settings) as opened:
        yield opened


@pytest.fixture
def register(registry: Registry, exported_models: list[ExportedModel]) -> Register:
    """``register(name, which=0, promote=None)``: the next version of ``name``, from
    ``exported_models[which]`` or from the ``ExportedModel`` given as ``which``."""

    def register_one(
        name: str, which: int | ExportedModel = 0, promote: str | None = None
    ) -> ModelVersionInfo:
        model = exported_models[which] if isinstance(which, int) else which
        info = registry.register_version(
            name,
            files=model.files,
            format=model.format,
            input_schema=model.input_schema,
            output_schema=model.output_schema,
            metrics={"roc_auc": 0.9},
        )
        if promote is not None:
            registry.promote(f"{name}:{info.version}", promote)
        return info

    return register_one


@pytest.fixture(scope="session")
def pipeline_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with fraud:1 trained by the pipeline runner (3,000 rows) and in production."""
    home = tmp_path_factory.mktemp("pipeline") / "home"
    text = example_spec("fraud").read_text()
    text = text.replace("rows: 60000", "rows: 3000").replace("max_iter: 150", "max_iter: 20")
    assert "rows: 3000" in text
    assert "max_iter: 20" in text
    with Registry.open(Settings(home=home)) as registry:
        Runner(registry).run(parse_spec(text), text)
        assert registry.get_version("fraud@production").version == 1
    return home

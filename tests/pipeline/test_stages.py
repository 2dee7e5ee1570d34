"""The export check: an ONNX export that does not predict as the trained model is replaced
by skops under ``format: auto`` and refused under ``format: onnx``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import InvalidInputError
from shipyard.pipeline import Runner, parse_spec
from shipyard.registry import Registry
from shipyard.settings import Settings

SPEC = """\
name: ulps
data:
  path: {path}
  columns: [{{name: x, dtype: float64}}, {{name: y, dtype: float64}}]
  target: y
task: regression
model:
  name: ulps
  type: HistGradientBoostingRegressor
  params: {{max_iter: 20, min_samples_leaf: 1}}
  format: {format}
split: {{test_size: 0.3}}
metrics: [r2]
promotion: {{require: always}}
"""


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    with Registry.open(Settings(home=home)) as opened:
        yield opened


@pytest.fixture
def adjacent_floats(tmp_path: Path) -> Path:
    """x: 200 consecutive float32 numbers, 8 rows each; y alternates between 1 and 1,000
    from one number to the next. Histogram gradient boosting splits between neighbours at
    float64 midpoints, which its float32 ONNX graph rounds onto one of them: the rows at
    about half of the splits take the other branch, and get the other y."""
    values = [np.float32(1.0)]
    for _ in range(199):
        values.append(np.nextafter(values[-1], np.float32(2.0)))
    x = np.repeat(np.array(values, dtype=np.float32), 8)
    y = np.repeat(np.where(np.arange(200) % 2, 1000.0, 1.0), 8)
    path = tmp_path / "ulps.csv"
    pd.DataFrame({"x": x.astype(np.float64), "y": y}).to_csv(path, index=False, float_format="%.9g")
    return path


def test_a_regressor_whose_onnx_export_disagrees_is_exported_with_skops(
    registry: Registry, adjacent_floats: Path
) -> None:
    text = SPEC.format(path=adjacent_floats, format="auto")
    result = Runner(registry).run(parse_spec(text), text)
    assert result.version.format == "skops"
    assert result.metrics["export_onnx_agreement"] < 0.9
    assert result.metrics["export_agreement"] == 1.0
    assert result.metrics["export_max_abs_diff"] < 1e-3  # float32 outputs


def test_with_format_onnx_the_disagreeing_export_fails_the_run(
    registry: Registry, adjacent_floats: Path
) -> None:
    text = SPEC.format(path=adjacent_floats, format="onnx")
    with pytest.raises(InvalidInputError) as raised:
        Runner(registry).run(parse_spec(text), text)
    message = str(raised.value)
    assert "the onnx export gives within 0.1% of the trained model's prediction on only" in message
    assert "set `model.format: skops` in the spec" in message
    assert registry.list_models() == []

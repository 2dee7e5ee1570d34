"""The rows simulated users send: a table's features and true labels, before and after drift.

Rows come from a file (``--data``) or a dataset's generator, and the drifted rows from the
dataset's drift scenario applied to them (``shipyard data generate --drift`` does the same),
so the users can switch to a drifted world mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shipyard.data import get_dataset, read_table
from shipyard.errors import InvalidInputError, SchemaError

if TYPE_CHECKING:
    import pandas as pd

#: Rows the generator makes when --rows is not given.
DEFAULT_ROWS = 20_000
#: Columns that are never features: the stream's and the CLI's id column.
ID_COLUMN = "id"
#: Most distinct labels a column may have for --label-noise to pick a wrong class.
MAX_CLASSES = 1000


@dataclass(frozen=True)
class Rows:
    """Feature rows (one per line of ``values``, columns named by ``names``) and, when the
    table has them, each row's true label as a JSON value."""

    names: list[str]
    values: np.ndarray[tuple[int, int], np.dtype[np.float64]]
    labels: list[Any] | None

    def __len__(self) -> int:
        return len(self.values)

    def select(self, names: list[str], where: str) -> Rows:
        """These rows with exactly the features ``names``, in that order."""
        missing = [name for name in names if name not in self.names]
        if missing:
            shown = ", ".join(missing[:10]) + (", …" if len(missing) > 10 else "")
            raise SchemaError(
                f"{where} has no column for the model's features {shown}; "
                "send rows of the table the model was trained on"
            )
        order = [self.names.index(name) for name in names]
        return Rows(list(names), self.values[:, order], self.labels)


@dataclass(frozen=True)
class RowPool:
    """The rows before drift and, when a scenario is given, after it."""

    normal: Rows
    drifted: Rows | None = None
    scenario: str | None = None
    source: str = ""

    def rows(self, drifted: bool) -> Rows:
        """The drifted rows once drift has started (and there are some), else the normal."""
        return self.drifted if drifted and self.drifted is not None else self.normal

    def select(self, names: list[str]) -> RowPool:
        """The pool with exactly the features ``names``, in that order."""
        drifted = None if self.drifted is None else self.drifted.select(names, self.source)
        return RowPool(self.normal.select(names, self.source), drifted, self.scenario, self.source)

    def classes(self) -> list[Any]:
        """The distinct labels of both parts, in sorted order (what a noisy label picks from)."""
        seen: set[Any] = set()
        for part in (self.normal, self.drifted):
            if part is not None and part.labels is not None:
                seen.update(part.labels)
        if len(seen) > MAX_CLASSES:
            raise InvalidInputError(
                f"the labels of {self.source} take {len(seen):,} values; --label-noise picks "
                "a wrong class and needs class labels"
            )
        return sorted(seen, key=lambda label: (str(type(label)), label))


def load_pool(
    *,
    data: Path | None,
    dataset: str = "fraud",
    rows: int | None = None,
    label_column: str | None = None,
    drift: str | None = None,
    drift_strength: float | None = None,
    drift_features: float | None = None,
    seed: int = 0,
) -> RowPool:
    """Rows from ``data`` or ``dataset``'s generator (``rows`` of them, from ``seed``),
    and, with ``drift``, the same rows drifted by that scenario."""
    spec = get_dataset(dataset)
    if drift is None and (drift_strength is not None or drift_features is not None):
        raise InvalidInputError("--drift-strength and --drift-features need --drift SCENARIO")
    if data is not None:
        if rows is not None:
            raise InvalidInputError(
                "--rows sizes the generated rows; with --data the file's rows are used"
            )
        frame = read_table(data, text_columns=(ID_COLUMN,))
        if frame.empty:
            raise InvalidInputError(f"{data} has no rows; give a table with at least one row")
        source = str(data)
    else:
        count = DEFAULT_ROWS if rows is None else rows
        if count < 1:
            raise InvalidInputError(f"--rows must be at least 1, got {count}")
        frame = spec.generate(count, seed)
        source = f"the {spec.name} generator"
    label = _label_column(frame, label_column, spec.schema.target, source)
    normal = _rows(frame, label, source)
    if drift is None:
        return RowPool(normal, source=source)
    if spec.drift is None:
        raise InvalidInputError(f"dataset {spec.name!r} has no drift scenarios")
    absent = [c.name for c in spec.schema.columns if c.name not in frame.columns]
    if absent:
        raise InvalidInputError(
            f"--drift moves the columns of the {spec.name} dataset; {source} has no "
            f"{', '.join(absent[:5])}"
        )
    drifted = spec.drift(frame, drift, drift_strength, drift_features, seed)
    return RowPool(normal, _rows(drifted, label, source), drift, source)


def _label_column(
    frame: pd.DataFrame, given: str | None, target: str | None, source: str
) -> str | None:
    if given is not None:
        if given not in frame.columns:
            columns = ", ".join(str(c) for c in frame.columns[:12])
            raise InvalidInputError(
                f"{source} has no label column {given!r} (its columns: {columns}); "
                "name it with --label-column"
            )
        return given
    for candidate in (target, "label"):
        if candidate is not None and candidate in frame.columns:
            return candidate
    return None


def _rows(frame: pd.DataFrame, label: str | None, source: str) -> Rows:
    import pandas as pd

    features = [c for c in frame.columns if c not in (label, ID_COLUMN)]
    if not features:
        raise InvalidInputError(f"{source} has no feature columns besides its label")
    for name in features:
        column = frame[name]
        if not (pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column)):
            raise SchemaError(
                f"{source}: column {name!r} is not numeric ({column.dtype}); give a table of "
                "numeric features (and the label)"
            )
    values = frame[features].to_numpy(np.float64)
    labels = None
    if label is not None:
        column = frame[label]
        if column.isna().any():
            row = int(np.flatnonzero(column.isna().to_numpy())[0])
            raise InvalidInputError(
                f"{source}: row {row + 1} has no label in {label!r}; every row needs its true "
                "label (or drop --label-probability)"
            )
        labels = column.tolist()
    return Rows([str(c) for c in features], values, labels)

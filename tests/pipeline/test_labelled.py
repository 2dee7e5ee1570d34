"""The labelled production rows: the gate's hold-out split."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from retraining import MODEL, copy_of_production
from shipyard.data import get_dataset
from shipyard.monitoring.log import prediction_table
from shipyard.monitoring.retraining import RetrainDataSpec
from shipyard.monitoring.sql import SqlLog
from shipyard.pipeline.labelled import TIME, drop_copies, labelled_rows, split_holdout
from shipyard.registry import Registry
from shipyard.settings import Settings


def test_training_rows_copying_a_held_out_rows_features_are_dropped() -> None:
    """Traffic drawn with replacement: the same features are predicted (and labelled) twice."""
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"a": rng.normal(size=10), "b": rng.normal(size=10)})
    frame = pd.concat([base, base.iloc[[7, 8, 9]]], ignore_index=True)  # 10 → 13 rows
    frame["label"] = [0, 1] * 6 + [0]
    frame.loc[12, "label"] = 1  # a copy's label may differ: the features decide
    frame[TIME] = np.arange(len(frame))
    # The newest 4 rows are held out: row 9 and the copies of rows 7, 8, 9.
    train, holdout, dropped = split_holdout(frame, 4 / 13, ["a", "b"])
    assert len(holdout) == 4
    assert list(holdout[TIME]) == [9, 10, 11, 12]
    assert dropped == 2  # rows 7 and 8; row 9 is held out itself
    assert list(train[TIME]) == [0, 1, 2, 3, 4, 5, 6]
    held = set(map(tuple, holdout[["a", "b"]].to_numpy()))
    assert not held & set(map(tuple, train[["a", "b"]].to_numpy()))


def test_without_copies_the_split_is_by_time_only() -> None:
    frame = pd.DataFrame({"a": np.arange(10.0), "label": [0, 1] * 5, TIME: np.arange(10)})
    train, holdout, dropped = split_holdout(frame, 0.3, ["a"])
    assert (len(train), len(holdout), dropped) == (7, 3, 0)
    assert list(holdout[TIME]) == [7, 8, 9]


def test_original_training_rows_are_matched_to_their_logged_float32_copies() -> None:
    """``data.original`` rows come from the training file (float64); a held-out row is a
    logged copy of one (float32): still the same row, so it is dropped from training."""
    rng = np.random.default_rng(1)
    original = pd.DataFrame({"a": rng.normal(size=6), "b": rng.normal(size=6), "label": 0})
    logged = (
        original.iloc[[1, 4]]
        .astype({"a": np.float32, "b": np.float32})
        .astype({"a": np.float64, "b": np.float64})
    )  # what the log gives back for rows 1 and 4
    assert not np.array_equal(logged["a"].to_numpy(), original["a"].iloc[[1, 4]].to_numpy())
    kept, dropped = drop_copies(original, logged, ["a", "b"])
    assert dropped == 2
    assert kept["a"].tolist() == original["a"].iloc[[0, 2, 3, 5]].tolist()


class PagedLog(SqlLog):
    """The SQL store read in pages of 100 rows, counting the pages read."""

    pages = 0

    def newest_first(
        self, model: str, *, since: datetime | None = None, page_rows: int = 100
    ) -> Iterator[tuple[datetime, dict[int, pa.Table]]]:
        for chunk in super().newest_first(model, since=since, page_rows=page_rows):
            self.pages += 1
            yield chunk


@pytest.fixture
def production(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Settings:
    """fraud v1 in production (the feedback store needs the model), on SQLite."""
    return copy_of_production(tmp_path_factory.getbasetemp(), tmp_path / "trained-home")


def test_only_the_newest_labelled_rows_asked_for_are_read(
    tmp_path: Path, production: Settings
) -> None:
    schema = get_dataset("fraud").schema
    names = schema.feature_names
    log = PagedLog(f"sqlite:///{tmp_path / 'log.db'}")
    now = datetime.now(UTC)
    rng = np.random.default_rng(5)
    for batch in range(20):  # 2,000 predictions, a batch a minute, newest last
        ids = [f"b{batch}-{i}" for i in range(100)]
        features = rng.normal(size=(100, len(names))).astype(np.float32)
        score = rng.random(100)
        outputs = {"probability": score, "label": (score >= 0.5).astype(np.int64)}
        when = now - timedelta(minutes=20 - batch)
        log.write(prediction_table(MODEL, 1, "http", ids, names, features, outputs, 1.0, when))
    with Registry.open(production) as registry:
        registry.monitoring.add_feedback(
            MODEL, [(f"b{b}-{i}", str(i % 2)) for b in range(20) for i in range(100)], source="file"
        )
        newest = labelled_rows(registry, log, MODEL, schema, RetrainDataSpec(last=150), now)
        assert len(newest.frame) == 150
        assert newest.scanned <= 300  # two pages of 100, not the 2,000 rows
        assert log.pages == 2
        log.pages = 0
        everything = labelled_rows(registry, log, MODEL, schema, RetrainDataSpec(last=None), now)
        assert everything.scanned == 2000
        assert log.pages == 20
    pd.testing.assert_frame_equal(newest.frame, everything.frame.iloc[-150:].reset_index(drop=True))
    log.close()

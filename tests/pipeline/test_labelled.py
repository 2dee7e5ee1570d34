"""The labelled production rows: the gate's hold-out split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.pipeline.labelled import TIME, split_holdout


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

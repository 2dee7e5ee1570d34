"""What one stage hands the next: tables as Arrow IPC, estimators through skops or their own
bytes, never a pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shipyard.errors import ArtifactError
from shipyard.pipeline import handoff
from shipyard.registry import ArtifactStore


class Weights:
    """A non-scikit-learn estimator that hands itself on as npz bytes."""

    def __init__(self, values: np.ndarray[Any, Any]) -> None:
        self.values = values

    def to_bytes(self) -> bytes:
        from io import BytesIO

        buffer = BytesIO()
        np.savez(buffer, values=self.values)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Weights:
        from io import BytesIO

        with np.load(BytesIO(data), allow_pickle=False) as loaded:
            return cls(loaded["values"])


def test_tables_go_as_arrow_ipc_and_come_back_equal() -> None:
    frame = pd.DataFrame(
        {"a": [1.5, 2.5], "b": ["x", "y"], "c": [1, 0], "d": pd.Categorical(["u", "v"])},
        index=[7, 3],
    )
    data = handoff.dump_frame(frame)
    assert data[:6] == b"ARROW1"
    pd.testing.assert_frame_equal(handoff.load_frame(data), frame.reset_index(drop=True))


def test_a_sklearn_estimator_goes_through_skops() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    fitted = LogisticRegression().fit(x, [0, 1] * 5)
    kind, data = handoff.dump_estimator(fitted)
    assert kind == "skops"
    loaded = handoff.load_estimator(kind, data)
    np.testing.assert_array_equal(loaded.predict_proba(x), fitted.predict_proba(x))


def test_a_class_of_the_table_hands_itself_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(handoff.ESTIMATOR_CLASSES, "weights", f"{__name__}:Weights")
    kind, data = handoff.dump_estimator(Weights(np.array([1.0, 2.0])))
    assert kind == "weights"
    loaded = handoff.load_estimator(kind, data)
    assert isinstance(loaded, Weights)
    np.testing.assert_array_equal(loaded.values, [1.0, 2.0])


def test_an_unknown_kind_or_an_untrusted_type_is_refused() -> None:
    with pytest.raises(ArtifactError, match="of kind 'nonesuch', which this worker cannot load"):
        handoff.load_estimator("nonesuch", b"")
    from shipyard.inference.formats import skops_io

    untrusted = skops_io().dumps({"x": pd.Timestamp("2026-01-01")})
    with pytest.raises(ArtifactError, match="outside the allow-list"):
        handoff.load_estimator("skops", untrusted)


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="the stage event names no 'frame' input"):
        handoff._digest({}, "frame")
    store = ArtifactStore(tmp_path)
    digest = store.put(b"[1, 2]")
    with pytest.raises(ArtifactError, match="is not a JSON object"):
        handoff._state({"state": digest}, store)


def test_a_lost_scratch_blob_fails_with_what_to_do(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    digest = store.put(handoff.dump_frame(frame), durable=False)
    store.path_of(digest).unlink()  # as a power cut before the cache reached the disk may
    with pytest.raises(
        ArtifactError, match=r"an earlier stage of this run handed on.*submit the run again"
    ):
        handoff._frame_blob(store, digest)

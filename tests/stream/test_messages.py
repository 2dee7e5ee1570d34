"""The stream's message format: parsing inputs, encoding rows, building results."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd

from shipyard.inference.inputs import FeatureLayout
from shipyard.stream.messages import (
    BAD_FEATURES,
    BAD_ID,
    NOT_JSON,
    encode_rows,
    parse_inputs,
    result_bodies,
    scores_and_labels,
    timestamp,
)

LAYOUT = FeatureLayout({"features": ["x", "y"]})


def test_parse_keeps_the_good_rows_in_order_with_their_ids() -> None:
    bodies = [
        b'{"id": "a", "x": 1, "y": 2.5}',
        b"{oops",
        b'{"id": "b", "x": -1, "y": 0, "extra": "ignored"}',
        b'{"x": 1, "y": 2}',
        b'{"id": "c", "x": "1", "y": 2}',
    ]
    parsed = parse_inputs(bodies, LAYOUT)
    assert parsed.ids == ["a", "b"]
    assert parsed.kept == [0, 2]
    np.testing.assert_array_equal(parsed.features, np.array([[1, 2.5], [-1, 0]], np.float32))
    assert parsed.features.dtype == np.float32
    assert [(r.position, r.kind) for r in parsed.refused] == [
        (1, NOT_JSON),
        (3, BAD_ID),
        (4, BAD_FEATURES),
    ]
    assert "'x' must be a number, got '1'" in parsed.refused[2].reason


def test_a_batch_of_only_bad_messages_scores_nothing() -> None:
    parsed = parse_inputs([b"1", b'"text"', b"null"], LAYOUT)
    assert parsed.features.shape == (0, 2)
    assert [r.kind for r in parsed.refused] == [NOT_JSON] * 3


def test_empty_and_non_string_ids_are_refused() -> None:
    parsed = parse_inputs([b'{"id": "", "x": 1, "y": 1}', b'{"id": [1], "x": 1, "y": 1}'], LAYOUT)
    assert [r.kind for r in parsed.refused] == [BAD_ID, BAD_ID]
    assert "got [1]" in parsed.refused[1].reason


def test_results_carry_score_label_version_and_timing() -> None:
    outputs = {"probability": np.array([0.25, 0.75], np.float32), "label": np.array([0, 1])}
    bodies = result_bodies(["a", "b"], "fraud", 3, outputs, [100.0, None], [1, 2], "1", 100.5)
    first, second = (orjson.loads(b) for b in bodies)
    assert first == {
        "id": "a",
        "model": "fraud",
        "version": 3,
        "score": 0.25,
        "label": 0,
        "scored_at": "1970-01-01T00:01:40.500Z",
        "latency_ms": 500.0,
        "attempts": 1,
        "worker": "1",
    }
    assert second["latency_ms"] is None
    assert second["attempts"] == 2


def test_scores_of_multiclass_and_regression_models() -> None:
    multi = {"probabilities": np.array([[0.1, 0.7, 0.2]]), "label": np.array(["b"])}
    assert scores_and_labels(multi) == ([0.7], ["b"])
    regression = {"prediction": np.array([3.5], np.float32)}
    assert scores_and_labels(regression) == ([3.5], [None])


def test_encode_rows_uses_the_id_column_and_nulls_for_missing_values() -> None:
    frame = pd.DataFrame({"id": [7, 8], "x": [1.5, np.nan], "y": [1, 2]})
    ids, bodies = encode_rows(frame)
    assert ids == ["7", "8"]
    assert [orjson.loads(b) for b in bodies] == [
        {"id": "7", "x": 1.5, "y": 1},
        {"id": "8", "x": None, "y": 2},
    ]


def test_encode_rows_makes_unique_ids_when_the_table_has_none() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [3, 4]})
    first, _ = encode_rows(frame)
    second, _ = encode_rows(frame)
    assert len(set(first + second)) == 4


def test_encoded_rows_parse_back_to_the_same_features() -> None:
    frame = pd.DataFrame({"x": np.linspace(0, 1, 5), "y": np.arange(5)})
    ids, bodies = encode_rows(frame)
    parsed = parse_inputs(bodies, LAYOUT)
    assert parsed.ids == ids
    np.testing.assert_allclose(parsed.features, frame.to_numpy(np.float32))


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert timestamp(0.1234) == "1970-01-01T00:00:00.123Z"


def test_rows_stay_with_their_ids_when_well_formed_and_irregular_messages_mix() -> None:
    """Well-formed messages take the typed decoder, the others the slow way; a message
    only the slow way accepts (a feature given twice, the last value a number) is scored
    too, and every row of features still answers its own id."""
    bodies = [
        b'{"id": "twice", "x": "first", "x": 7, "y": 8}',
        b'{"id": "a", "x": 1, "y": 2}',
        b'{"id": "b", "x": null, "y": 2}',
        b'{"id": "c", "x": 3, "y": 4}',
    ]
    nullable_x = FeatureLayout(
        {"features": ["x", "y"], "columns": [{"name": "x", "nullable": True}]}
    )
    parsed = parse_inputs(bodies, nullable_x)
    assert not parsed.refused
    rows = {i: row.tolist() for i, row in zip(parsed.ids, parsed.features, strict=True)}
    assert (rows["twice"], rows["a"], rows["c"]) == ([7, 8], [1, 2], [3, 4])
    assert np.isnan(rows["b"][0])
    assert [bodies[p].split(b'"')[3].decode() for p in parsed.kept] == parsed.ids


def test_values_the_model_cannot_take_refuse_only_their_message() -> None:
    bodies = [
        b'{"id": "null", "x": null, "y": 1}',
        b'{"id": "huge", "x": 1e39, "y": 1}',
        b'{"id": "beyond-float", "x": 1' + b"0" * 400 + b', "y": 1}',
        b'{"id": "bool", "x": true, "y": 1}',
        b'{"id": "latin-1", "x": 1, "y": 1, "note": "\xe9"}',
        b'{"id": "good", "x": 1, "y": 1}',
    ]
    parsed = parse_inputs(bodies, LAYOUT)
    assert parsed.ids == ["good"]
    reasons = {r.position: (r.kind, r.reason) for r in parsed.refused}
    assert reasons[0] == (BAD_FEATURES, "feature 'x' is null; the model's schema requires a value")
    assert reasons[1][0] == BAD_FEATURES
    assert "float32 range" in reasons[1][1]
    assert reasons[2][0] == NOT_JSON
    assert "infinity" in reasons[2][1]
    assert reasons[3] == (BAD_FEATURES, "feature 'x' must be a number, got True")
    assert reasons[4][0] == NOT_JSON
    assert "UTF-8" in reasons[4][1]


def test_a_model_with_a_feature_named_id_refuses_every_message_with_a_reason() -> None:
    parsed = parse_inputs(
        [b'{"id": "a", "x": 1}', b'{"id": 2, "x": 1}'], FeatureLayout({"features": ["id", "x"]})
    )
    assert parsed.ids == []
    assert [r.kind for r in parsed.refused] == [BAD_FEATURES, BAD_ID]


def test_ids_longer_than_feedback_accepts_are_refused_naming_the_limit() -> None:
    """Feedback refuses ids over 200 characters, so a prediction with one could never be
    labelled (and a SQL log's id column would refuse it): the message is dead-lettered."""
    longest, too_long = "a" * 200, "b" * 201
    bodies = [
        orjson.dumps({"id": longest, "x": 1, "y": 2}),
        orjson.dumps({"id": too_long, "x": 1, "y": 2}),
        orjson.dumps({"id": "é" + too_long, "x": 1, "y": 2}),  # not ASCII: the slow way
    ]
    parsed = parse_inputs(bodies, LAYOUT)
    assert parsed.ids == [longest]
    assert [(r.position, r.kind) for r in parsed.refused] == [(1, BAD_ID), (2, BAD_ID)]
    for refusal in parsed.refused:
        assert "at most 200 are allowed" in refusal.reason

"""The stream's message format: inputs in, results out, JSON in UTF-8.

An **input** is one JSON object holding the model's feature columns and an ``id`` string;
any other field is ignored, so a plain AMQP, NATS or Redis client needs nothing but the
queue name::

    {"id": "tx-1", "Time": 0.0, "V1": -1.36, ..., "V28": -0.02, "Amount": 149.62}

A **result** names the input and the model version that scored it::

    {"id": "tx-1", "model": "fraud", "version": 3, "score": 0.0132, "label": 0,
     "scored_at": "2026-11-22T12:00:00.123Z", "latency_ms": 4.1, "attempts": 1, "worker": "0"}

``score`` is the positive class's probability for a binary classifier, the predicted class's
probability for a multi-class one, the prediction of a regressor (whose ``label`` is null);
``latency_ms`` runs from the input's publication to scoring. A message that is not valid
JSON, not an object, has no string ``id`` of 1 to ``MAX_ID_LENGTH`` (200) characters (the
longest id feedback can name) or whose features do not fit the model is refused with a
reason naming what was wrong; the dead-letter queue keeps it with the reason (see
``shipyard.messaging.broker``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson
import pandas as pd

from shipyard.inference.inputs import CheckedRecords, FeatureLayout
from shipyard.inference.predictor import Features, Outputs
from shipyard.registry.monitoring import MAX_ID_LENGTH

ID = "id"

# Dead-letter reasons as bounded metric labels; the message itself says more.
NOT_JSON = "not_json"
BAD_ID = "bad_id"
BAD_FEATURES = "bad_features"
MODEL_ERROR = "model_error"


@dataclass(frozen=True)
class Refusal:
    """Why one message of a batch cannot be scored."""

    position: int
    kind: str
    reason: str


@dataclass(frozen=True)
class Inputs:
    """A batch of bodies parsed and checked: the rows to score and what was refused."""

    features: Features
    kept: list[int]
    """Positions (in the batch) of the rows of ``features``."""
    ids: list[str]
    """The ``id`` of each row of ``features``."""
    refused: list[Refusal]


def parse_inputs(bodies: Sequence[bytes], layout: FeatureLayout) -> Inputs:
    """Parse and check each body on its own; one bad message refuses only itself.

    A message the model's typed decoder takes (ASCII, an object with a string ``id`` of 1
    to ``MAX_ID_LENGTH`` characters and a number or null for every feature) costs one call;
    any other goes the slow way, which names what is wrong with it (or, in a corner the
    decoder is stricter about, such as a feature given twice, accepts it as before)."""
    decode = _decoder(tuple(layout.names))
    rows: list[Sequence[float | None]] = []
    positions: list[int] = []
    ids: list[str] = []
    slow: list[int] = []
    for position, body in enumerate(bodies):
        # The decoder skips the fields it does not read unchecked, their UTF-8 too.
        if decode is None or not body.isascii():
            slow.append(position)
            continue
        try:
            *row, message_id = decode(body)
        except msgspec.DecodeError:  # ValidationError included
            slow.append(position)
            continue
        rows.append(row)
        positions.append(position)
        ids.append(message_id)
    inputs = _checked(layout.check_rows(rows, list(range(len(rows)))), positions, ids, [])
    if slow:
        other = _parse_slowly([bodies[i] for i in slow], layout)
        inputs = Inputs(
            np.concatenate([inputs.features, other.features]),
            inputs.kept + [slow[i] for i in other.kept],
            inputs.ids + other.ids,
            inputs.refused + [Refusal(slow[r.position], r.kind, r.reason) for r in other.refused],
        )
    inputs.refused.sort(key=lambda r: r.position)
    return inputs


def _checked(
    checked: CheckedRecords, positions: list[int], ids: list[str], refused: list[Refusal]
) -> Inputs:
    """The rows ``checked`` kept, at their ``positions`` in the batch with their ``ids``;
    the rows it refused join ``refused``."""
    refused += [
        Refusal(positions[i], BAD_FEATURES, reason) for i, reason in checked.reasons.items()
    ]
    kept = checked.kept
    return Inputs(checked.features, [positions[i] for i in kept], [ids[i] for i in kept], refused)


@functools.lru_cache(maxsize=16)
def _decoder(names: tuple[str, ...]) -> Callable[[bytes], tuple[Any, ...]] | None:
    """A decoder from a message to ``(feature values in order..., id)`` that refuses (raises
    ``msgspec.DecodeError``) anything but a well-formed input; ``None`` when a feature is
    named ``id`` (no message can then be scored; the slow way says why)."""
    if ID in names:
        return None
    fields: list[tuple[str, Any]] = [(f"f{i}", float | None) for i in range(len(names))]
    fields.append((ID, Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]))
    rename = {f"f{i}": name for i, name in enumerate(names)}
    message = msgspec.defstruct("Message", fields, rename=rename, gc=False)
    decode = msgspec.json.Decoder(message).decode
    as_tuple = msgspec.structs.astuple

    def parse(body: bytes) -> tuple[Any, ...]:
        return as_tuple(decode(body))

    return parse


def _parse_slowly(bodies: Sequence[bytes], layout: FeatureLayout) -> Inputs:
    """Each body as a JSON value checked step by step, naming what is wrong."""
    records: list[dict[str, Any]] = []
    positions: list[int] = []
    refused: list[Refusal] = []
    for position, body in enumerate(bodies):
        try:
            record = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            refused.append(Refusal(position, NOT_JSON, f"not JSON in UTF-8 ({error})"))
            continue
        if not isinstance(record, dict):
            refused.append(
                Refusal(position, NOT_JSON, "not a JSON object of feature: value and an id")
            )
            continue
        message_id = record.get(ID)
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID_LENGTH:
            refused.append(Refusal(position, BAD_ID, id_problem(message_id)))
            continue
        records.append(record)
        positions.append(position)
    ids = [record[ID] for record in records]
    return _checked(layout.check_records(records), positions, ids, refused)


def id_problem(value: Any) -> str:
    """Why ``value`` is not a message id."""
    if value is None:
        return "no `id`: every message needs an `id` string to match its result"
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        return (
            f"`id` is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed "
            "(feedback could never name a longer one)"
        )
    return f"`id` must be a non-empty string, got {orjson.dumps(value).decode()[:60]}"


def scores_and_labels(outputs: Outputs) -> tuple[list[float], list[Any]]:
    """One score and one label per row, whatever the model's task."""
    if "probability" in outputs:
        return outputs["probability"].tolist(), outputs["label"].tolist()
    if "probabilities" in outputs:
        return outputs["probabilities"].max(axis=1).tolist(), outputs["label"].tolist()
    predictions = next(iter(outputs.values()))
    return predictions.reshape(-1).tolist(), [None] * len(predictions)


def timestamp(seconds: float) -> str:
    """An ISO 8601 UTC time with milliseconds, as results carry it."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def result_bodies(
    ids: Sequence[str],
    model: str,
    version: int,
    outputs: Outputs,
    published_at: Sequence[float | None],
    attempts: Sequence[int],
    worker: str,
    scored_at: float,
    top_k: Sequence[list[dict[str, Any]]] | None = None,
) -> list[bytes]:
    """The result message of each scored row; with ``top_k`` (an image model's), each
    carries its most probable classes too."""
    if top_k is not None:  # rare and dwarfed by decoding images: the plain results, extended
        plain = result_bodies(ids, model, version, outputs, published_at, attempts, worker,
                              scored_at)  # fmt: skip
        return [orjson.dumps(orjson.loads(body) | {"top_k": top})
                for body, top in zip(plain, top_k, strict=True)]  # fmt: skip
    scores, labels = scores_and_labels(outputs)
    when = timestamp(scored_at)
    return [
        orjson.dumps(
            {
                "id": message_id,
                "model": model,
                "version": version,
                "score": score,
                "label": label,
                "scored_at": when,
                "latency_ms": None if sent is None else round((scored_at - sent) * 1000, 3),
                "attempts": tries,
                "worker": worker,
            }
        )
        for message_id, score, label, sent, tries in zip(
            ids, scores, labels, published_at, attempts, strict=True
        )
    ]


def encode_rows(frame: pd.DataFrame, id_column: str = ID) -> tuple[list[str], list[bytes]]:
    """A table's rows as input messages: the ``id_column`` as ``id`` (as text) or, when the
    table has none, ids made up of a random prefix and the row number."""
    columns = [str(c) for c in frame.columns]
    if id_column in frame.columns:
        ids = frame[id_column].astype(str).tolist()
        columns.remove(id_column)
    else:
        prefix = uuid.uuid4().hex[:12]
        ids = [f"{prefix}-{i}" for i in range(len(frame))]
    values = frame[columns].astype(object).where(frame[columns].notna(), None)
    bodies = [
        orjson.dumps({ID: message_id, **dict(zip(columns, row, strict=True))},
                     option=orjson.OPT_SERIALIZE_NUMPY)
        for message_id, row in zip(ids, values.itertuples(index=False, name=None), strict=True)
    ]  # fmt: skip
    return ids, bodies

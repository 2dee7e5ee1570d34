"""Ground truth for predictions: a batch of ``{id, label}`` checked against the model's labels.

A label must be one the model could have predicted: one of its classes for a classifier
(``1``, ``true``, ``1.0`` and ``"1"`` all name class 1), a finite number for a regressor.
Labels are stored as text, as the prediction log stores predicted labels (``"0"``/``"1"`` for
bool or integer classes, the shortest repr of a float for a regression), so a label and its
prediction compare as strings. One bad item refuses the whole batch and nothing is stored,
so a client can fix and resend it without working out which part arrived. Unknown, late and
duplicate ids never refuse a batch: duplicates are known when stored, unknown and late ids
when the monitor joins labels to predictions (``feedback_counts``). An integer id stands for
its decimal text (``7`` is ``"7"``), as when predicting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shipyard.errors import ConflictError, InvalidInputError, PayloadTooLargeError
from shipyard.monitoring.ids import as_id
from shipyard.registry import DEFAULT_ALIAS, ModelRef, Registry
from shipyard.registry.monitoring import FEEDBACK_SOURCES, MAX_ID_LENGTH, FeedbackReceipt

ITEM_KEYS = frozenset({"id", "label"})
REFUSED = "nothing of this batch was stored; fix it and send the whole batch again"


@dataclass(frozen=True)
class LabelSchema:
    """What a label of one model looks like: its task and, for a classifier, its classes."""

    model: str
    task: Literal["classification", "regression"]
    classes: tuple[str, ...] = ()
    """The classes as stored text, in the model's order; empty for a regression."""

    @classmethod
    def from_output_schema(cls, model: str, output_schema: Mapping[str, Any]) -> LabelSchema:
        """The labels of a version whose output schema names its task (and classes)."""
        task = output_schema.get("task")
        if task == "regression":
            return cls(model, "regression")
        classes = output_schema.get("classes")
        if task != "classification" or not isinstance(classes, list) or not classes:
            raise ConflictError(
                f"the output schema of {model} names no task and classes, so its feedback "
                "labels cannot be checked; register the model with `shipyard pipeline run`"
            )
        return cls(model, "classification", tuple(label_text(c) for c in classes))

    @classmethod
    def from_profile(cls, model: str, profile: Mapping[str, Any]) -> LabelSchema | None:
        """The labels the reference profile's target shows; None when it has no target."""
        target = profile.get("target")
        if not isinstance(target, Mapping):
            return None
        classes = target.get("classes")
        if classes is None:
            return cls(model, "regression")
        return cls(model, "classification", tuple(str(c) for c in classes))

    def normalize(self, label: Any, prediction_id: str) -> str:
        """The label as stored text; ``InvalidInputError`` naming the id when it cannot be
        a label of this model."""
        shown = _shown(label)
        if self.task == "regression":
            if isinstance(label, bool) or not isinstance(label, int | float):
                raise InvalidInputError(
                    f"feedback for id {prediction_id!r}: the label {shown} is not a number, and "
                    f"{self.model} is a regression model; {REFUSED}"
                )
            if not math.isfinite(label):
                raise InvalidInputError(
                    f"feedback for id {prediction_id!r}: the label {shown} is not a finite "
                    f"number; {REFUSED}"
                )
            return repr(float(label))
        text = _class_text(label)
        if text is None or text not in self.classes:
            raise InvalidInputError(
                f"feedback for id {prediction_id!r}: the label {shown} is not a class of "
                f"{self.model} (classes: {', '.join(self.classes)}); {REFUSED}"
            )
        return text


def label_text(value: Any) -> str:
    """A predicted or true class as the prediction log and the feedback store keep it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def label_schema(registry: Registry, model: str) -> LabelSchema:
    """The labels of ``model``, from its production version (its latest if none is)."""
    ref = ModelRef(ModelRef.parse(model).name, alias=DEFAULT_ALIAS)
    if DEFAULT_ALIAS not in registry.get_model(ref.name).aliases:
        ref = ModelRef(ref.name)
    version = registry.get_version(ref)
    if "task" in version.output_schema:
        return LabelSchema.from_output_schema(ref.name, version.output_schema)
    profile = registry.get_profile(ModelRef(ref.name, version.version)) or {}
    found = LabelSchema.from_profile(ref.name, profile)
    return found or LabelSchema.from_output_schema(ref.name, version.output_schema)


def parse_feedback(
    items: Any, labels: LabelSchema, *, max_items: int | None = None
) -> list[tuple[str, str]]:
    """``(prediction id, label text)`` pairs of a batch of ``{"id", "label"}`` objects.

    ``InvalidInputError`` names the id (or the position of an item without one) of the first
    bad item; ``PayloadTooLargeError`` when the batch holds more than ``max_items``.
    """
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise InvalidInputError(
            f'feedback is a list of {{"id": ..., "label": ...}} objects, not {type(items).__name__}'
        )
    if max_items is not None and len(items) > max_items:
        raise PayloadTooLargeError(
            f"{len(items):,} feedback items in one batch; send at most {max_items:,} per batch "
            "(SHIPYARD_MAX_FEEDBACK_ITEMS)"
        )
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInputError(
                f'feedback item {position} is {_shown(item)}, not an {{"id", "label"}} object; '
                f"{REFUSED}"
            )
        prediction_id = as_id(item.get("id"))  # 7 is "7", as when predicting
        if not isinstance(prediction_id, str) or not prediction_id:
            raise InvalidInputError(
                f"feedback item {position} has no `id` string (got {_shown(prediction_id)}): "
                f'quote the id its prediction answered with, as a JSON string such as "7"; '
                f"{REFUSED}"
            )
        if len(prediction_id) > MAX_ID_LENGTH:
            raise InvalidInputError(
                f"feedback item {position}: the id is {len(prediction_id)} characters long; "
                f"prediction ids have at most {MAX_ID_LENGTH}; {REFUSED}"
            )
        extra = sorted(str(key) for key in item.keys() - ITEM_KEYS)
        if extra:
            raise InvalidInputError(
                f"feedback for id {prediction_id!r} has unknown fields {', '.join(extra)}; an "
                f"item holds only `id` and `label`; {REFUSED}"
            )
        if "label" not in item:
            raise InvalidInputError(f"feedback for id {prediction_id!r} has no `label`; {REFUSED}")
        pairs.append((prediction_id, labels.normalize(item["label"], prediction_id)))
    return pairs


def ingest_feedback(
    registry: Registry,
    model: str,
    items: Any,
    source: str,
    *,
    max_items: int | None = None,
    labels: LabelSchema | None = None,
) -> FeedbackReceipt:
    """Check a batch against ``model``'s labels and store it; one bad item stores nothing.

    ``labels`` saves looking them up again when a caller sends many batches.
    """
    if source not in FEEDBACK_SOURCES:
        raise InvalidInputError(f"feedback source {source!r} is not one of {FEEDBACK_SOURCES}")
    labels = labels or label_schema(registry, model)
    pairs = parse_feedback(items, labels, max_items=max_items)
    return registry.monitoring.add_feedback(labels.model, pairs, source=source)


def _class_text(label: Any) -> str | None:
    """The text of a class label given as a bool, an integer, a whole float or a string."""
    if isinstance(label, bool | int | str):
        return label_text(label)
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."

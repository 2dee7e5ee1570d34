"""Stage events: a run id, a stage and input digests; anything else is refused with why."""

from __future__ import annotations

import pytest

from shipyard.errors import InvalidInputError
from shipyard.pipeline.events import STAGE_NAMES, StageEvent, stage_queue


def test_an_event_round_trips_and_names_the_next_stage() -> None:
    event = StageEvent("r1", "split", {"frame": "ab" * 32})
    assert StageEvent.parse(event.to_bytes(), "split") == event
    following = event.next({"train": "cd" * 32})
    assert following == StageEvent("r1", "train", {"train": "cd" * 32})
    assert StageEvent("r1", STAGE_NAMES[-1], {}).next({}) is None
    assert stage_queue("pipeline", "train").name == "pipeline.train"
    assert stage_queue("pipeline", "train").dead_letter_name == "pipeline.train.dead"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "a stage event that is not JSON"),
        (b"[]", 'a stage event is {"run": ID'),
        (b'{"stage": "train"}', "a stage event without its run id"),
        (b'{"run": "r", "stage": "fit"}', "a stage event for stage 'fit'; the stages are ingest"),
        (b'{"run": "r", "stage": "train", "inputs": {"x": 1}}', "maps names to sha256 digests"),
        (b'{"run": "r", "stage": "train", "inputs": "' + b"x" * 70_000 + b'"}', "never data"),
    ],
)
def test_bad_events_are_refused_with_the_reason(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("{", r"\{").replace("(", r"\(")):
        StageEvent.parse(body)

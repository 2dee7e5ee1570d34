"""The labelled production rows a retrain learns from and is gated on.

The prediction log (what each version was asked, by id) joined by id with the feedback
stored for the model (what the truth turned out to be): one row per labelled prediction,
with its features in the spec's schema, its label as the target's type and the time it was
predicted. ``split_holdout`` keeps the newest share of them out of training, for the gate
(and the older rows that copy a held-out row's features, so the gate scores unseen rows);
``original_sample`` adds a share of the current version's own training table, found through
the run that registered it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.data import TableSchema, file_sha256, get_dataset, read_table
from shipyard.errors import InvalidInputError, ShipyardError
from shipyard.monitoring.paging import pages
from shipyard.monitoring.windows import EPOCH, LogRows

if TYPE_CHECKING:
    from shipyard.monitoring.records import PredictionLog
    from shipyard.monitoring.retraining import RetrainDataSpec
    from shipyard.registry import Registry, RunInfo

#: Feedback rows read per page.
FEEDBACK_PAGE = 10_000
#: The column of a labelled table that holds when the row was predicted (not a feature).
TIME = "__predicted_at"


@dataclass(frozen=True)
class Labelled:
    """The labelled production rows of a model, oldest first."""

    frame: pd.DataFrame
    """The schema's features and target, plus ``TIME``."""
    scanned: int
    """Log rows read."""
    labels: int
    """Labels stored for the model in the range."""

    def bounds(self) -> dict[str, Any]:
        """The first and last prediction time of the rows (ISO), and their count."""
        return span(self.frame)


def labels_since(registry: Registry, model: str, since: datetime | None) -> dict[str, str]:
    """The model's labels received since ``since`` (all when None), by prediction id; an id
    labelled twice keeps its first label, as the monitor does."""
    truth: dict[str, str] = {}
    for page in pages(
        lambda after: registry.monitoring.feedback_after(
            model, after, limit=FEEDBACK_PAGE, since=since
        ),
        lambda record: record.seq,
        size=FEEDBACK_PAGE,
    ):
        for record in page:
            truth.setdefault(record.id, record.label)
    return truth


def span(frame: pd.DataFrame) -> dict[str, Any]:
    """``{rows, first, last}`` of a labelled table."""
    if frame.empty:
        return {"rows": 0, "first": None, "last": None}
    return {
        "rows": len(frame),
        "first": _iso(int(frame[TIME].iloc[0])),
        "last": _iso(int(frame[TIME].iloc[-1])),
    }


def _iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat()


def labelled_rows(
    registry: Registry,
    log: PredictionLog,
    model: str,
    schema: TableSchema,
    rules: RetrainDataSpec,
    now: datetime,
) -> Labelled:
    """The model's predictions that have a label, of every version, within ``rules.since``
    and the newest ``rules.last`` of them; a prediction logged twice (a redelivered
    message) counts once, as its latest record. The log is read newest first, only ids,
    times and features, and no further back than those ``rules.last`` need."""
    since = now - timedelta(seconds=rules.since) if rules.since is not None else None
    truth = labels_since(registry, model, since)
    assert schema.target is not None
    names = tuple(schema.feature_names)
    empty = pd.DataFrame({**{n: [] for n in names}, schema.target: [], TIME: []})
    scanned = 0
    parts: list[LogRows] = []
    if truth:
        wanted = pa.array(list(truth), pa.string())
        for floor, tables in log.newest_first(model, since=since):
            for table in tables.values():
                scanned += len(table)
                kept = table.filter(pc.is_in(table.column("id"), value_set=wanted))
                if len(kept):
                    parts.append(_rows(kept))
            # Every row still unread is older than the floor: once the rows at or above it
            # hold ``last`` labelled predictions, the newest ``last`` are all read.
            if rules.last is not None and parts:
                above = micros(floor)
                ids = np.concatenate([p.ids[p.times >= above] for p in parts])
                if len(np.unique(ids)) >= rules.last:
                    break
    if not parts:
        return Labelled(empty, scanned, len(truth))
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.stacked(part)
    order = np.argsort(rows.times, kind="stable")
    ids, times, features = rows.ids[order], rows.times[order], rows.aligned(names)[order]
    # The latest record of an id wins: keep each id's last position in time order.
    _, last = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - last)
    ids, times, features = ids[keep], times[keep], features[keep]
    if rules.last is not None and len(ids) > rules.last:
        ids, times, features = ids[-rules.last :], times[-rules.last :], features[-rules.last :]
    frame = pd.DataFrame(features.astype(np.float64), columns=list(names))
    frame[schema.target] = pd.Series([truth[i] for i in ids], dtype=object)
    try:  # labels are text as feedback stores them: typed, or an error naming the row
        frame = schema.validate_frame(frame, require_target=True)
    except InvalidInputError as error:
        raise InvalidInputError(
            f"the labelled production rows do not fit the spec: {error}"
        ) from error
    frame[TIME] = times
    return Labelled(frame, scanned, len(truth))


def _rows(table: pa.Table) -> LogRows:
    """``LogRows`` of a table of ``NEWEST_COLUMNS`` (no score or predicted label)."""
    rows = len(table)
    return LogRows.from_table(
        table.append_column("score", pa.nulls(rows, pa.float64())).append_column(
            "label", pa.nulls(rows, pa.string())
        )
    )


def micros(when: datetime) -> int:
    """``when`` as the log's times: microseconds since the epoch."""
    return (when - EPOCH) // timedelta(microseconds=1)


def split_holdout(
    frame: pd.DataFrame, share: float, features: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The older rows to train on, the newest ``share`` of them to gate on, and how many
    older rows were dropped for having the very features of a held-out row."""
    held = max(1, round(len(frame) * share))
    train = frame.iloc[: len(frame) - held].reset_index(drop=True)
    holdout = frame.iloc[len(frame) - held :].reset_index(drop=True)
    train, copies = drop_copies(train, holdout, features)
    return train, holdout, copies


def drop_copies(
    rows: pd.DataFrame, holdout: pd.DataFrame, features: Sequence[str]
) -> tuple[pd.DataFrame, int]:
    """``rows`` without those whose features are a held-out row's, and how many went.

    Traffic may send the same features again (a replayed request, rows sampled from the
    training file): a copy in training would let the candidate score rows it has seen, so
    the gate would overstate it. Numbers are compared as the log keeps them (float32), so a
    training file's row matches its logged copy."""
    seen = _feature_hashes(holdout, features)
    copies = _feature_hashes(rows, features).isin(seen).to_numpy()
    return rows[~copies].reset_index(drop=True), int(copies.sum())


def _feature_hashes(frame: pd.DataFrame, features: Sequence[str]) -> pd.Series[Any]:
    part = frame[list(features)]
    numeric = part.select_dtypes("number").columns
    return pd.util.hash_pandas_object(
        part.astype({name: np.float32 for name in numeric}), index=False
    )


def original_sample(
    run: RunInfo | None, schema: TableSchema, share: float, seed: int
) -> tuple[pd.DataFrame | None, str]:
    """``share`` of the rows the run trained on, and how they were found (or why not):
    the run's file if its SHA-256 is still the one recorded, else its generator again."""
    if share <= 0:
        return None, "not asked for (data.original: 0)"
    if run is None:
        return None, "the current version has no run to find its training data through"
    source = run.params.get("data") or {}
    try:
        if "path" in source:
            path = Path(str(source["path"]))
            if not path.is_file():
                return None, f"its run's data file {path} is gone"
            if run.dataset_sha256 and file_sha256(path) != run.dataset_sha256:
                return None, f"its run's data file {path} changed since (SHA-256 differs)"
            table = read_table(path)
            where = str(path)
        elif "generate" in source:
            generate = source["generate"]
            table = get_dataset(generate["dataset"]).generate(
                int(generate["rows"]), int(generate.get("seed", 0))
            )
            digest = hashlib.sha256(
                pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes()
            ).hexdigest()
            if run.dataset_sha256 and digest != run.dataset_sha256:
                return None, "its run's generator no longer makes the same table"
            where = f"generated {generate}"
        else:
            return None, "its run predates runs that record their data source"
        table = schema.validate_frame(table, require_target=True)
    except (ShipyardError, OSError, KeyError, ValueError) as error:
        return None, f"its run's data could not be read ({error})"
    sample = table.sample(frac=share, random_state=seed).reset_index(drop=True)
    return sample[[*schema.feature_names, schema.target]], f"{len(sample):,} rows of {where}"


__all__ = ["TIME", "Labelled", "labelled_rows", "original_sample", "span", "split_holdout"]

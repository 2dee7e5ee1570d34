"""One model under watch: its versions' windows, the feedback join, verdicts and snapshots.

``ModelTracker.update`` is one cycle for one model, with no I/O but the prediction log and
the registry: read the log from the cursor, join new feedback by prediction id, judge each
version's windows (live performance, drift), open or close episodes, save a snapshot per
version, and only then move the cursors. ``rebuild`` restores the state after a restart or
a takeover from the log (``scan``) and the store.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.errors import NotFoundError
from shipyard.monitoring.config import MonitoringSpec
from shipyard.monitoring.drift import DatasetDrift, detect_drift
from shipyard.monitoring.episodes import Episodes
from shipyard.monitoring.history import HistorySchedule
from shipyard.monitoring.log import STREAM, BatchCursor, name_floor
from shipyard.monitoring.paging import pages
from shipyard.monitoring.performance import (
    RANKED_ROWS,
    Cumulative,
    TaskInfo,
    degraded,
    delay_quantiles,
    judgeable,
    live_metrics,
    primary_metric,
)
from shipyard.monitoring.windows import US, JoinIndex, LogRows, VersionRows, Window
from shipyard.registry import ModelRef

if TYPE_CHECKING:
    from shipyard.monitoring.log import PredictionLog
    from shipyard.registry import ModelVersionInfo, Registry
    from shipyard.registry.events import EventRecord
    from shipyard.registry.monitoring import FeedbackRecord, FeedbackStatus

logger = logging.getLogger(__name__)

FEEDBACK_PAGE = 10_000
#: Feedback pages read per cycle at most; the rest waits for the next cycle.
MAX_FEEDBACK_PAGES = 20
#: Feedback received this long ago is committed: the cursor may pass it (see _new_feedback).
SETTLE_S = 30.0
#: How often the pending feedback below the cursor is read again.
SWEEP_S = 300.0
#: How many ids settled ``unknown`` are joined after all if their prediction shows up.
UNKNOWN_RECHECKED = 10_000
#: A restart refilling a quiet version's count window scans back at most this many steps,
#: each twice as long as the one before.
REFILL_STEPS = 12


@dataclass(frozen=True)
class TrackerOptions:
    """What every tracker of one monitor shares."""

    feedback_window_s: float
    index_rows: int
    grace_s: float
    window_rows: int | None = None  # overrides every spec (``--window-rows``)
    window_minutes: float | None = None
    #: Labelled rows the ranking metrics over every label keep (a sample beyond).
    ranked_rows: int = RANKED_ROWS
    #: Rows of a time window drift runs on at most (default 10 x the count window).
    sample_rows: int | None = None
    #: How far back the log goes (its retention): a restart never scans further.
    retention_s: float = 30 * 86400.0
    #: A history point per version at most this often (and when a verdict changes).
    history_s: float = 60.0


@dataclass(frozen=True)
class Labelled:
    """A joined prediction: the truth, what the model said, when each happened."""

    truth: str
    score: float
    predicted: str | None
    time_us: int
    received_us: int


@dataclass
class VersionState:
    """One version's rows, labels and rules."""

    info: ModelVersionInfo
    task: TaskInfo
    spec: MonitoringSpec
    profile: dict[str, Any] | None
    rows: VersionRows
    totals: Cumulative
    labelled: OrderedDict[str, Labelled] = field(default_factory=OrderedDict)
    #: The metrics and delays over every labelled row, until a label arrives.
    cumulative: dict[str, Any] | None = None
    #: A restart's boundary: rows up to this time are in the restored ``seen``.
    through_us: int = 0
    #: (seen, labelled) when the totals were last saved.
    saved: tuple[int, int] = (-1, -1)


@dataclass
class CycleResult:
    """What one update did, for metrics and the broker."""

    rows: int = 0
    feedback: dict[str, int] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * US)


def uuid7_time_us(text: str) -> int | None:
    """The creation time a UUIDv7 carries (server-assigned ids), else None."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return (value.int >> 80) * 1000


class ModelTracker:
    """The monitor's state for one model it owns."""

    def __init__(
        self,
        model: str,
        registry: Registry,
        log: PredictionLog,
        options: TrackerOptions,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.model = model
        self.registry = registry
        self.store = registry.monitoring
        self.log = log
        self.options = options
        self.clock = clock
        self.index = JoinIndex(options.index_rows, int(options.feedback_window_s * US))
        self.versions: dict[int, VersionState] = {}
        self.pending: OrderedDict[str, FeedbackRecord] = OrderedDict()
        self.episodes = Episodes(self.store, model)
        self.history = HistorySchedule(options.history_s)
        self.unknown: OrderedDict[str, FeedbackRecord] = OrderedDict()
        self.log_cursor: dict[str, Any] | None = None
        self.log_newest_us = 0  # the newest prediction time read from the log
        self.feedback_seq = 0
        self.swept: datetime | None = None
        self._rebuilt_rows = 0
        # Ids a rebuild put back in the windows without counting them: rows the saved log
        # cursor does not cover come again from the next ``read_new`` and are counted then.
        self._uncounted: set[str] = set()

    # -- state ----------------------------------------------------------------------------

    def version(self, number: int) -> VersionState:
        """The state of a version, made on first sight from its registry record."""
        state = self.versions.get(number)
        if state is None:
            info = self.registry.get_version(ModelRef(self.model, number, None))
            spec = MonitoringSpec.from_tags(info.tags)
            windows = spec.windows
            count = self.options.window_rows or windows.rows
            state = VersionState(
                info=info,
                task=TaskInfo.from_output_schema(info.output_schema),
                spec=spec,
                profile=self.registry.get_profile(info.ref),
                rows=VersionRows(
                    count,
                    self.options.window_minutes or windows.minutes,
                    windows.min_rows or count,
                    self.options.sample_rows,
                ),
                totals=Cumulative(
                    TaskInfo.from_output_schema(info.output_schema), self.options.ranked_rows
                ),
            )
            self.versions[number] = state
        return state

    def rebuild(self) -> None:
        """Restore windows, join index, labels, pending feedback and episodes after a
        restart: the totals since each version began serving from the store, the rows of
        the longest window from the log (``scan``), further back for a count window that is
        not full again, and the labels joined within the feedback window."""
        now = self.clock()
        self.log_cursor = self.store.cursor(self.model, "log")
        cursor = self.store.cursor(self.model, "feedback")
        self.feedback_seq = int(cursor["seq"]) if cursor else 0
        self.episodes.load()
        before = self._restore_totals()
        longest_s = max(
            [self.options.feedback_window_s]
            + [60 * (self.options.window_minutes or 0)]
            + [
                60 * MonitoringSpec.from_tags(v.tags).windows.minutes
                for v in self.registry.list_versions(self.model)
            ]
        )
        # Rows since the longest window, never the whole retained log; a model read for the
        # first time is then followed from now on (the scan has what came before).
        since = now - timedelta(seconds=longest_s)
        # ... and at most ``index_rows`` of them, the newest: a busy model's rebuild stays
        # short (the index keeps no more anyway).
        tables = _newest(self.log.scan(self.model, since=since), self.options.index_rows)
        # A model new to the monitor counts what the scan found; otherwise the saved log
        # cursor says what was counted, and the next read brings the rest.
        added = self._add_rows(tables, restoring=self.log_cursor is not None)
        if self.log_cursor is None:  # new to the monitor: the next cycle reports these rows
            self._rebuilt_rows = added
            self.log_cursor = BatchCursor(name_floor(_us(now) // 1000), frozenset()).dump()
        self._refill(before, since, now)
        self.index.evict(_us(now))
        # Only labels of predictions still in the index matter, and a label comes after its
        # prediction: the joined rows received within the feedback window, never all of them.
        joined_since = now - timedelta(seconds=self.options.feedback_window_s)
        for record in self._all_feedback("joined", since=joined_since):
            prediction = self.index.get(record.id)
            if prediction is not None:
                self._label(record, prediction.version, restoring=True)
        for record in self._all_feedback("pending"):
            self.pending[record.id] = record

    def _restore_totals(self) -> dict[int, int]:
        """Each saved version's totals and ``seen``; returns how many rows each one's count
        window held when it was saved."""
        before: dict[int, int] = {}
        for number, snapshot in self.store.snapshots(self.model).items():
            saved = self.store.cursor(self.model, _totals_name(number))
            try:
                state = self.version(number)
            except NotFoundError:
                continue
            if saved is not None:
                state.totals = Cumulative.from_state(
                    state.task, saved["cumulative"], self.options.ranked_rows
                )
                state.rows.seen = int(saved["seen"])
                state.through_us = int(saved["through_us"])
                state.saved = (state.rows.seen, state.totals.labelled)
            before[number] = int(snapshot.get("windows", {}).get("rows", {}).get("rows", 0))
        return before

    def _refill(self, before: Mapping[int, int], since: datetime, now: datetime) -> None:
        """Scan back in time, in steps that double, until each version's count window holds
        as many rows as when it was saved, or the log's retention is reached."""
        oldest = now - timedelta(seconds=self.options.retention_s)
        step = max(now - since, timedelta(minutes=1))
        until = since
        for _ in range(REFILL_STEPS):
            short = [
                number
                for number, rows in before.items()
                if number in self.versions
                and len(self.versions[number].rows.recent)
                < min(rows, self.versions[number].rows.window_rows)
            ]
            if not short or until <= oldest:
                return
            start = max(until - step, oldest)
            for number in short:
                tables = self.log.scan(self.model, version=number, since=start, until=until)
                if number in tables and len(tables[number]):
                    self.versions[number].rows.add_older(LogRows.from_table(tables[number]))
            until, step = start, step * 2

    def _all_feedback(
        self, status: FeedbackStatus, since: datetime | None = None
    ) -> list[FeedbackRecord]:
        records: list[FeedbackRecord] = []
        for page in pages(
            lambda after: self.store.feedback_after(
                self.model, after, limit=FEEDBACK_PAGE, status=status, since=since
            ),
            lambda record: record.seq,
            size=FEEDBACK_PAGE,
        ):
            records += page
        return records

    def _add_rows(self, tables: Mapping[int, Any], restoring: bool = False) -> int:
        added = 0
        for number, table in sorted(tables.items()):
            if not len(table):
                continue
            try:
                state = self.version(number)
            except NotFoundError:
                logger.warning(
                    "%s: the log has rows of v%d, which the registry lacks; skipped",
                    self.model,
                    number,
                )
                continue
            rows = LogRows.from_table(table)
            order = np.argsort(rows.times, kind="stable")
            rows = rows.take(order)
            stream = _from_stream(table)[order]
            self.log_newest_us = max(self.log_newest_us, int(rows.times[-1]))
            new = self.index.add(number, rows, stream)
            fresh = rows.take(new)
            if restoring:  # in the windows again; counted when the log read brings them
                self._uncounted.update(fresh.ids.tolist())
                state.rows.add(fresh, 0)
                added += int(new.sum())
                continue
            counted = int(new.sum())
            if self._uncounted:
                again = [i for i in rows.take(~new).ids.tolist() if i in self._uncounted]
                counted += len(again)
                self._uncounted.difference_update(again)
            state.rows.add(fresh, counted)
            added += counted
        return added

    def _label(self, record: FeedbackRecord, number: int, restoring: bool = False) -> None:
        prediction = self.index.get(record.id)
        assert prediction is not None
        state = self.version(number)
        received_us = _us(record.received_at)
        state.labelled[record.id] = Labelled(
            record.label, prediction.score, prediction.label, prediction.time_us, received_us
        )
        state.labelled.move_to_end(record.id)
        # A restart's labels are those the store says joined: the totals saved with their
        # statuses (``commit_cycle``) count them already.
        if not restoring:
            delay_s = (received_us - prediction.time_us) / US
            state.totals.add(record.label, prediction.score, prediction.label, delay_s, record.seq)
            state.cumulative = None
        while len(state.labelled) > self.options.index_rows:
            state.labelled.popitem(last=False)

    # -- one cycle ------------------------------------------------------------------------

    def update(self) -> CycleResult:
        """Read, join, judge, then save it all in one transaction (``commit_cycle``): the
        feedback statuses, every version's totals and snapshot, the log and feedback
        cursors. What the store says was read and joined is then exactly what the saved
        totals count. When this raises, the tracker's state is ahead of the store's: the
        monitor drops it and the next cycle rebuilds from what was committed."""
        now = self.clock()
        now_us = _us(now)
        result = CycleResult()
        tables, log_cursor = self.log.read_new(self.model, self.log_cursor)
        result.rows = self._add_rows(tables) + self._rebuilt_rows
        self._uncounted.clear()  # the rest of the rebuild's rows were counted before it
        self.index.evict(now_us)
        for state in self.versions.values():
            state.rows.trim(now_us)
        statuses, feedback_seq = self._join(now)
        result.feedback = _counts(statuses)
        cursors: dict[str, dict[str, Any]] = {"log": dict(log_cursor)}
        if feedback_seq != self.feedback_seq:
            cursors["feedback"] = {"seq": feedback_seq}
        totals: dict[int, tuple[int, int]] = {}
        for number, state in sorted(self.versions.items()):
            snapshot, events = self._judge(number, state, now)
            result.events += events
            result.snapshots[number] = snapshot
            key = (state.rows.seen, state.totals.labelled)
            if key != state.saved:  # the totals since the version began serving, if changed
                cursors[_totals_name(number)] = self._totals(state)
                totals[number] = key
        history = self.history.due(result.snapshots, now)
        self.store.commit_cycle(
            self.model,
            statuses=statuses,
            cursors=cursors,
            snapshots=result.snapshots,
            history=history,
        )
        self.history.kept(history, result.snapshots)
        self.log_cursor = cursors["log"]
        self.feedback_seq = feedback_seq
        self._rebuilt_rows = 0
        for number, key in totals.items():
            self.versions[number].saved = key
        return result

    @staticmethod
    def _totals(state: VersionState) -> dict[str, Any]:
        """A version's totals as saved for a restart."""
        return {
            "seen": state.rows.seen,
            "through_us": max(state.through_us, state.rows.newest_us or 0),
            "cumulative": state.totals.state(),
        }

    def _join(self, now: datetime) -> tuple[dict[str, FeedbackStatus], int]:
        """Join pending and new feedback to predictions by id: the statuses of what is
        decided (to commit), and where the feedback cursor moves."""
        records, cursor = self._new_feedback(now)
        records += [r for r in self.unknown.values() if r.id in self.index]
        statuses: dict[str, FeedbackStatus] = {}
        now_us = _us(now)
        too_old = now_us - int(self.options.feedback_window_s * US)
        grace_us = int(self.options.grace_s * US)
        for record in records:
            prediction = self.index.get(record.id)
            if prediction is not None:
                self._label(record, prediction.version)
                statuses[record.id] = "joined"
                self.unknown.pop(record.id, None)
                continue
            if record.id in self.unknown:
                continue
            stamped = uuid7_time_us(record.id)
            received_us = _us(record.received_at)
            if self.index.left(record.id) or (stamped is not None and stamped < too_old):
                statuses[record.id] = "late"
            elif (
                # The log has been read past the feedback by the grace period: the
                # prediction, had it been made, would be in it (a sink outage holds records
                # back, and with them the log's newest time)...
                (received_us + grace_us <= self.log_newest_us and now_us - received_us >= grace_us)
                # ... or the feedback window is over, or too much is waiting.
                or received_us < too_old
                or len(self.pending) >= self.options.index_rows
            ):
                statuses[record.id] = "unknown"
                self.unknown[record.id] = record
                while len(self.unknown) > UNKNOWN_RECHECKED:
                    self.unknown.popitem(last=False)
            else:
                self.pending[record.id] = record
                continue
            self.pending.pop(record.id, None)
        for pid in statuses:
            self.pending.pop(pid, None)
        return statuses, cursor

    def _new_feedback(self, now: datetime) -> tuple[list[FeedbackRecord], int]:
        """The pending feedback to try: what waits, and the store's pending rows after the
        cursor. On PostgreSQL a row's ``seq`` is taken at insert and transactions commit in
        any order, so a row can appear below one already read: the cursor only passes rows
        received ``SETTLE_S`` ago, and every ``SWEEP_S`` the pending rows below it are read
        again (on an index of model, status, seq: the rows that joined are not read)."""
        records = dict(self.pending)
        settled_before = now - timedelta(seconds=SETTLE_S)
        cursor = self.feedback_seq
        for page in pages(
            lambda after: self.store.feedback_after(
                self.model, after, limit=FEEDBACK_PAGE, status="pending"
            ),
            lambda record: record.seq,
            after=self.feedback_seq,
            size=FEEDBACK_PAGE,
            max_pages=MAX_FEEDBACK_PAGES,
        ):
            for record in page:
                records.setdefault(record.id, record)
                if record.received_at <= settled_before:
                    cursor = max(cursor, record.seq)
        if self.swept is None or now - self.swept >= timedelta(seconds=SWEEP_S):
            for page in pages(
                lambda after: self.store.feedback_after(
                    self.model, after, limit=FEEDBACK_PAGE, status="pending"
                ),
                lambda record: record.seq,
                size=FEEDBACK_PAGE,
                max_pages=MAX_FEEDBACK_PAGES,
            ):
                for record in page:
                    if record.seq <= self.feedback_seq:
                        records.setdefault(record.id, record)
                if page[-1].seq > self.feedback_seq:
                    break
            self.swept = now
        return list(records.values()), cursor

    # -- verdicts -------------------------------------------------------------------------

    def _judge(
        self, number: int, state: VersionState, now: datetime
    ) -> tuple[dict[str, Any], list[EventRecord]]:
        now_us = _us(now)
        windows = [state.rows.count_window(), state.rows.time_window(now_us)]
        offline = dict(state.info.metrics)
        perf_spec = state.spec.performance
        metric = primary_metric(state.task, offline, perf_spec.metric)
        if state.cumulative is None:  # the totals' metrics: only on new labels
            state.cumulative = {
                "metrics": state.totals.metrics(),
                "labelled": state.totals.labelled,
                "delay": state.totals.delay(),
            }
        cumulative = _with_coverage(state.cumulative, state.rows.seen)
        cumulative["sampled"] = state.totals.sampled  # ROC AUC, AP and delays on a sample
        performance: dict[str, Any] = {"all": cumulative, "offline": offline}
        drift: dict[str, Any] = {}
        drifted: list[tuple[Window, DatasetDrift]] = []
        any_drift_verdict = False
        degradations: list[dict[str, Any]] = []
        any_perf_verdict = False
        for window in windows:
            labelled = [
                state.labelled[pid] for pid in window.rows.ids.tolist() if pid in state.labelled
            ]
            perf = self._performance(state, labelled, len(window.rows))
            performance[window.kind] = perf
            if (
                metric is not None
                and metric in offline
                and judgeable(
                    state.task,
                    [item.truth for item in labelled],
                    perf_spec.min_labelled,
                    perf_spec.min_per_class,
                )
            ):
                live = perf["metrics"].get(metric)
                if live is not None:
                    any_perf_verdict = True
                    if degraded(metric, live, offline[metric], perf_spec.margin):
                        degradations.append(
                            {
                                "metric": metric,
                                "live": live,
                                "offline": offline[metric],
                                "margin": perf_spec.margin,
                                "rows": len(labelled),
                                "window": window.bounds(),
                            }
                        )
            verdict = self._drift(state, window)
            drift[window.kind] = {
                "window": window.bounds(),
                "result": verdict.to_dict() if verdict is not None else None,
                "verdict": verdict.drifted if verdict is not None and window.full else None,
            }
            if verdict is not None and window.full:
                any_drift_verdict = True
                if verdict.drifted:
                    drifted.append((window, verdict))
        events = []
        drift_now = bool(drifted) if any_drift_verdict else None
        drift_evidence = _drift_evidence(drifted) if drifted else {"windows": _bounds(windows)}
        event = self.episodes.observe(number, "drift", drift_now, drift_evidence)
        if event is not None:
            events.append(event)
        perf_now = bool(degradations) if any_perf_verdict else None
        perf_evidence = degradations[0] if degradations else {"metric": metric}
        event = self.episodes.observe(number, "performance", perf_now, perf_evidence)
        if event is not None:
            events.append(event)
        snapshot = {
            "model": self.model,
            "version": number,
            "updated_at": now.isoformat(),
            "rows_seen": state.rows.seen,
            "windows": {
                w.kind: {**w.bounds(), "labelled": performance[w.kind]["labelled"]} for w in windows
            },
            "performance": {
                **performance,
                "primary": {
                    "metric": metric,
                    "offline": offline.get(metric) if metric else None,
                    "margin": perf_spec.margin,
                    "min_labelled": perf_spec.min_labelled,
                    "min_per_class": perf_spec.min_per_class,
                },
            },
            "drift": drift,
            "dataset_drift": {kind: value["verdict"] for kind, value in drift.items()},
            "reference_profile": state.profile is not None,
            "episodes": {
                "drift": self.episodes.is_open(number, "drift"),
                "performance": self.episodes.is_open(number, "performance"),
            },
        }
        return _finite(snapshot), events

    def _performance(
        self, state: VersionState, labelled: list[Labelled], predicted: int
    ) -> dict[str, Any]:
        return _with_coverage(self._labelled_metrics(state, labelled), predicted)

    @staticmethod
    def _labelled_metrics(state: VersionState, labelled: list[Labelled]) -> dict[str, Any]:
        truth = [item.truth for item in labelled]
        scores = np.asarray([item.score for item in labelled], dtype=np.float64)
        guesses = [item.predicted for item in labelled]
        delays = np.asarray(
            [(item.received_us - item.time_us) / US for item in labelled], dtype=np.float64
        )
        return {
            "metrics": live_metrics(state.task, truth, scores, guesses),
            "labelled": len(labelled),
            "delay": delay_quantiles(delays),
        }

    def _drift(self, state: VersionState, window: Window) -> DatasetDrift | None:
        if state.profile is None or not len(window.rows):
            return None
        scores = window.rows.scores if "score" in state.profile else None
        return detect_drift(
            state.profile,
            list(window.rows.names),
            window.rows.features.astype(np.float64),
            state.spec.drift_config(),
            scores=scores,
        )


def _newest(tables: Mapping[int, pa.Table], limit: int) -> dict[int, pa.Table]:
    """The newest ``limit`` rows of the versions' tables together."""
    if sum(len(table) for table in tables.values()) <= limit:
        return dict(tables)
    times = {
        number: pc.cast(table.column("time"), pa.timestamp("us", "UTC")).cast(pa.int64()).to_numpy()
        for number, table in tables.items()
    }
    every = np.concatenate(list(times.values()))
    cut = np.partition(every, len(every) - limit)[len(every) - limit]  # the limit-th newest
    above = int((every > cut).sum())
    ties = limit - above  # rows at exactly ``cut`` still taken
    kept: dict[int, pa.Table] = {}
    for number, table in sorted(tables.items()):
        keep = times[number] > cut
        at = np.flatnonzero(times[number] == cut)
        keep[at[:ties]] = True
        ties -= min(ties, len(at))
        if keep.any():
            kept[number] = table.filter(pa.array(keep))
    return kept


def _from_stream(table: pa.Table) -> npt.NDArray[np.bool_]:
    """Which rows of a log table the stream scorer logged."""
    source = pc.fill_null(pc.equal(table.column("source").cast(pa.string()), STREAM), False)
    return np.asarray(source.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _counts(statuses: Mapping[str, FeedbackStatus]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def _totals_name(number: int) -> str:
    """The store cursor a version's totals are saved under."""
    return f"totals:v{number}"


def _with_coverage(labelled: dict[str, Any], predicted: int) -> dict[str, Any]:
    """Metrics over labelled rows, with how many predictions they are labels of."""
    count = labelled["labelled"]
    return {
        "metrics": labelled["metrics"],
        "labelled": count,
        "predicted": predicted,
        "coverage": count / predicted if predicted else None,
        "delay": labelled["delay"],
    }


def _bounds(windows: list[Window]) -> list[dict[str, Any]]:
    return [w.bounds() for w in windows]


def _drift_evidence(drifted: list[tuple[Window, DatasetDrift]]) -> dict[str, Any]:
    window, verdict = drifted[0]
    features = {
        name: {
            "method": feature.method,
            "statistic": feature.statistic,
            "threshold": feature.threshold,
        }
        for name, feature in verdict.features.items()
        if feature.drifted
    }
    return {
        "window": window.bounds(),
        "share": verdict.share,
        "drift_share": verdict.drift_share,
        "rows": verdict.rows,
        "features": features,
        "score": verdict.score.to_dict() if verdict.score is not None else None,
        "windows": [w.kind for w, _ in drifted],
    }


def _finite(value: Any) -> Any:
    """JSON without NaN or infinity: those become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


__all__ = ["CycleResult", "ModelTracker", "TrackerOptions", "uuid7_time_us"]

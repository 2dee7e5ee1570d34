"""Scoring a file on a Dask cluster, partition by partition, written in the order of its rows.

The client verifies the artifact and plans the partitions; each partition is a pure task
(read the rows, check them, score them) whose result, lost with a worker, is simply computed
again elsewhere. Workers get the verified files as one recomputable future and build each
model's predictor once per process. The client writes the results in file order while later
partitions are still being scored, holding at most a window of them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from concurrent.futures import CancelledError
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from shipyard.cluster.partitions import (
    EncodedPart,
    FilePart,
    FilePlan,
    encode_part,
    ordered_output,
    output_kind,
    plan_file,
    read_part,
)
from shipyard.errors import ArtifactTamperedError, ClusterError
from shipyard.inference.batch import (
    DEFAULT_BATCH_ROWS,
    NonNumber,
    first_non_number,
    non_number_error,
    score_frame,
)
from shipyard.inference.predictor import Predictor, frame_to_features, load_predictor
from shipyard.inference.predictor import predictor_from_files as build_predictor
from shipyard.registry import VerifiedArtifact

if TYPE_CHECKING:
    from distributed import Client, Future

#: Rows per partition unless the caller says otherwise: big enough that a task's overhead
#: (a few milliseconds) is small beside scoring it, small enough for many tasks per worker.
DEFAULT_PARTITION_ROWS = 100_000

#: Predictors a worker process keeps, most recently used first (one per model digest).
CACHED_PREDICTORS = 4

#: ``progress(rows, size)``: a partition of ``rows`` rows and ``size`` (its weight in the
#: plan's total, rows or bytes) is done.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelFiles:
    """A verified artifact as workers receive it: the files' bytes with the digests that the
    signed manifest gives them, so a worker checks what it got before parsing a byte."""

    digest: str
    name: str
    version: int
    format: str
    files: dict[str, bytes]
    sha256: dict[str, str]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]

    @classmethod
    def of(cls, artifact: VerifiedArtifact) -> ModelFiles:
        """The files of an artifact the registry has verified."""
        manifest = artifact.manifest
        return cls(
            artifact.manifest_digest,
            manifest.name,
            manifest.version,
            manifest.format,
            dict(artifact.files),
            {name: entry.sha256 for name, entry in manifest.files.items()},
            manifest.input_schema,
            manifest.output_schema,
        )


_predictors: OrderedDict[str, Predictor] = OrderedDict()
_predictors_lock = threading.Lock()


def worker_predictor(model: ModelFiles) -> Predictor:
    """The predictor of ``model`` in this process, built on first use after checking the
    files' digests."""
    with _predictors_lock:
        predictor = _predictors.get(model.digest)
        if predictor is None:
            for name, data in model.files.items():
                if hashlib.sha256(data).hexdigest() != model.sha256.get(name):
                    raise ArtifactTamperedError(
                        f"file {name} of {model.name}:{model.version} reached a Dask worker "
                        "with other bytes than its manifest's digest; the artifact was refused"
                    )
            predictor = build_predictor(
                model.name,
                model.version,
                model.format,
                model.files,
                model.input_schema,
                model.output_schema,
            )
            _predictors[model.digest] = predictor
            while len(_predictors) > CACHED_PREDICTORS:
                _predictors.popitem(last=False)
        _predictors.move_to_end(model.digest)
        return predictor


@dataclass(frozen=True)
class ScoredPart:
    """A partition's outcome: its rows scored and encoded for the output file, or its first
    value that is no number (``row`` counted within the partition)."""

    number: int
    rows: int
    encoded: EncodedPart | None
    bad: NonNumber | None


def score_part(part: FilePart, model: ModelFiles, batch_rows: int, kind: str) -> ScoredPart:
    """Read, check, score and encode (as output ``kind``) one partition: a task on a worker,
    pure, so recomputable."""
    frame = read_part(part)
    if frame.empty and not len(frame.columns):  # a JSON Lines range with no line
        return ScoredPart(part.number, 0, None, None)
    predictor = worker_predictor(model)
    bad = first_non_number(frame, predictor.input_schema["features"])
    if bad is not None:
        return ScoredPart(part.number, len(frame), None, bad)
    scored = score_frame(predictor, frame, batch_rows=batch_rows)
    return ScoredPart(part.number, len(frame), encode_part(scored, kind), None)


def _files(model: ModelFiles) -> ModelFiles:
    return model


def score_file_on_cluster(
    client: Client,
    artifact: VerifiedArtifact,
    input: Path,
    output: Path,
    *,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    plan: FilePlan | None = None,
    progress: Progress | None = None,
) -> int:
    """Score every row of ``input`` on the cluster and write ``output`` as the in-process
    path would (same rows, order and columns); the number of rows. Bad input raises the same
    errors, naming the row in the whole file."""
    plan = plan or plan_file(input, partition_rows)
    check_columns(artifact, plan)
    model = ModelFiles.of(artifact)
    # The files travel inside the task, so the scheduler can compute them again when every
    # worker holding them has died; workers fetch them from each other, not from the client.
    files = client.submit(_files, model, key=f"shipyard-model-{model.digest}")
    window = 2 * max(1, sum(client.nthreads().values())) + 2
    before = 0  # rows of the partitions already written
    last_empty: EncodedPart | None = None
    kind = output_kind(output)
    with (
        ordered_output(output) as writer,
        closing(
            _in_order(client, plan.parts, files, batch_rows, kind, window, progress)
        ) as results,
    ):
        for result in results:
            if result.bad is not None:
                bad = result.bad
                raise non_number_error(input, NonNumber(before + bad.row, bad.column, bad.value))
            before += result.rows
            if result.encoded is None:
                continue
            if result.rows:
                writer.write(result.encoded)
            else:  # written only if the file has no row at all: the header of the output
                last_empty = result.encoded
        if not writer.rows and last_empty is not None:
            writer.write(last_empty)
    files.release()
    return before


def check_columns(artifact: VerifiedArtifact, plan: FilePlan) -> None:
    """The predictor's error for missing feature columns, from the columns the file's header
    or schema names, before any worker starts; building the predictor here also proves the
    artifact loads before a worker tries."""
    predictor = load_predictor(artifact)
    frame_to_features(pd.DataFrame(columns=plan.columns, dtype="float32"), predictor)


def _in_order(
    client: Client,
    parts: list[FilePart],
    files: Future[ModelFiles],
    batch_rows: int,
    kind: str,
    window: int,
    progress: Progress | None,
) -> Generator[ScoredPart]:
    """The partitions' results in file order, with at most ``window`` submitted and not yet
    yielded (a partition recomputed after a worker died holds later ones back)."""
    from distributed import KilledWorker, as_completed

    pending: dict[int, Future[ScoredPart]] = {}
    done: dict[int, ScoredPart] = {}
    queue = as_completed(loop=client.loop)
    submitted = yielded = 0

    def top_up() -> None:
        nonlocal submitted
        while submitted < len(parts) and submitted < yielded + window:
            future = client.submit(
                score_part, parts[submitted], files, batch_rows, kind, pure=False
            )
            pending[submitted] = future
            queue.add(future)
            submitted += 1

    top_up()
    try:
        for future in queue:
            try:
                result: ScoredPart = future.result()
            except KilledWorker as error:
                raise ClusterError(
                    f"a partition of {parts[0].path} was being scored by each Dask worker "
                    f"that died ({error}); look at the workers' logs and memory, then rerun"
                ) from error
            except (CancelledError, OSError, TimeoutError) as error:
                raise ClusterError(
                    f"lost the Dask scheduler while scoring {parts[0].path} "
                    f"({type(error).__name__}: {error}); no output was written: rerun when "
                    "the cluster is back"
                ) from error
            pending.pop(result.number, None)
            if progress is not None:
                progress(result.rows, parts[result.number].size)
            done[result.number] = result
            while yielded in done:
                yield done.pop(yielded)
                yielded += 1
            top_up()
    finally:
        client.cancel(list(pending.values()))

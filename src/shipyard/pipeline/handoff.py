"""What one stage hands the next when they run in different processes: the parts of a
``RunContext`` as bytes in the content-addressed artifact store, never pickled.

A stage worker restores the parts its stage reads (``restore``), runs the stage, and keeps
the parts it wrote (``keep``); a stage event carries only their digests. The parts:

- ``data`` — the table file a submitted run reads (put in the store at submit);
- ``frame`` — the table as Arrow IPC (Feather v2, uncompressed); ``rows`` — the split's
  training and held-out row positions in it (``numpy.savez``), from which ``train`` and
  ``test`` are taken;
- ``estimator`` — the fitted estimator: scikit-learn's through skops, loaded with the
  allow-list of ``inference.formats`` (``skops_trusted_types``); an estimator class listed in
  ``ESTIMATOR_CLASSES`` through its own ``to_bytes()`` / ``from_bytes()``;
- ``files.NAME`` — the exported model's files;
- ``state`` — JSON of the small things: metrics, tags, the dataset digest, the estimator's
  kind, the export's format and schemas, the registered version and the promotion.

Tables, row positions, estimators and states are scratch blobs, put without waiting for
the disk (``ArtifactStore.put(durable=False)``), as the in-process run keeps them only in
memory: a worker killed mid-stage leaves them in the operating system's cache for the next
worker, and one lost to a power cut fails the run with a message saying so (every read
re-hashes). So are the exported files: registering them, a durable put of the same bytes,
syncs them to disk before the version is recorded.

A worker keeps the last few tables and estimators it stored or loaded in memory by digest
(``Recent``): a blob's digest names its bytes, so one found there is the one in the store,
and a worker that runs several stages of a run in a row reads none of them back.
"""

from __future__ import annotations

import importlib
import io
import json
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import partial
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import feather, ipc

from shipyard.errors import ArtifactError
from shipyard.inference import ExportedModel
from shipyard.inference.formats import skops_dumps, skops_io, skops_trusted_types
from shipyard.pipeline.stages import Promotion, RunContext
from shipyard.registry import ArtifactStore, ModelRef

SKOPS = "skops"
"""The estimator kind of anything scikit-learn (the default)."""

ESTIMATOR_CLASSES: dict[str, str] = {
    "cnn": "shipyard.pipeline.vision:ConvNetClassifier",
}
"""Estimator classes handed on through their own bytes rather than skops: kind →
``module:Class``. The class has ``to_bytes() -> bytes`` and a classmethod
``from_bytes(data) -> instance`` that read and write no pickle (``numpy.savez`` of the
weights, ``numpy.load(allow_pickle=False)``). One row per class."""

FILE_PREFIX = "files."
RECENT_ITEMS = 8


class Recent:
    """The last ``size`` objects stored or loaded, by the digest of their bytes."""

    def __init__(self, size: int = RECENT_ITEMS) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str, load: Callable[[], Any]) -> Any:
        """The object of ``digest``, loaded by ``load`` unless it is here."""
        with self._lock:
            if digest in self._items:
                self._items.move_to_end(digest)
                return self._items[digest]
        value = load()
        self.add(digest, value)
        return value

    def peek(self, digest: str) -> Any:
        """The object of ``digest`` if it is here, else None (nothing is loaded)."""
        with self._lock:
            return self._items.get(digest)

    def add(self, digest: str, value: Any) -> None:
        """Keep ``value`` as the object of ``digest``."""
        with self._lock:
            self._items[digest] = value
            self._items.move_to_end(digest)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


RECENT = Recent()

# What each stage reads beyond ``state`` (which every stage reads and writes).
NEEDS: dict[str, tuple[str, ...]] = {
    "ingest": ("data",),
    "validate": ("frame",),
    "split": ("frame",),
    "train": ("train",),
    "evaluate": ("estimator", "test"),
    "export": ("estimator", "test"),
    "register": ("estimator", "train", "exported"),
    "promote": (),
}
# What each stage writes beyond ``state``.
MAKES: dict[str, tuple[str, ...]] = {
    "ingest": ("frame",),
    "validate": ("frame",),
    "split": ("rows",),
    "train": ("estimator",),
    "evaluate": (),
    "export": ("exported",),
    "register": (),
    "promote": (),
}


def dump_frame(frame: pd.DataFrame) -> memoryview:
    """A table as Arrow IPC file (Feather v2) bytes, uncompressed (its index left out, as
    every stage resets it): a copy of the columns' memory, about ten times faster to write
    than Parquet for a table that lives only between two stages of one run. A view of
    Arrow's buffer, not a copy (``ArtifactStore.put`` takes it as it is)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


def load_frame(data: bytes | memoryview) -> pd.DataFrame:
    """The table of ``dump_frame``'s bytes."""
    table: pd.DataFrame = feather.read_feather(pa.BufferReader(data))
    return table


def estimator_kind(estimator: Any) -> str:
    """How ``estimator`` is handed on: its row of ``ESTIMATOR_CLASSES``, else skops."""
    name = f"{type(estimator).__module__}:{type(estimator).__qualname__}"
    for kind, implementation in ESTIMATOR_CLASSES.items():
        if implementation == name:
            return kind
    return SKOPS


def dump_estimator(estimator: Any) -> tuple[str, bytes]:
    """The estimator's kind and bytes: skops for scikit-learn, ``to_bytes()`` for a class of
    ``ESTIMATOR_CLASSES``."""
    kind = estimator_kind(estimator)
    if kind == SKOPS:
        return kind, skops_dumps(estimator)
    return kind, bytes(estimator.to_bytes())


def load_estimator(kind: str, data: bytes) -> Any:
    """The estimator ``dump_estimator`` wrote; skops bytes are checked against the allow-list
    before anything is built, and nothing is unpickled."""
    if kind == SKOPS:
        return skops_io().loads(data, trusted=skops_trusted_types(data))
    implementation = ESTIMATOR_CLASSES.get(kind)
    if implementation is None:
        known = ", ".join([SKOPS, *ESTIMATOR_CLASSES])
        raise ArtifactError(
            f"a stage handed on an estimator of kind {kind!r}, which this worker cannot load "
            f"(it knows {known}); run the same Shipyard version on every stage worker"
        )
    module, name = implementation.split(":")
    cls = getattr(importlib.import_module(module), name)
    return cls.from_bytes(data)


def restore(
    ctx: RunContext, stage: str, inputs: Mapping[str, str], store: ArtifactStore
) -> Path | None:
    """Fill ``ctx`` with what stage ``stage`` reads from the blobs ``inputs`` names. For
    ingest of a data file, the file is written to a temporary folder (returned: the caller
    removes it) and the spec is pointed at it."""
    state = _state(inputs, store)
    _apply_state(ctx, state)
    folder: Path | None = None
    for part in NEEDS[stage]:
        if part == "data":
            if "data" not in inputs:
                continue  # the spec generates its table
            folder = Path(tempfile.mkdtemp(prefix="shipyard-stage-"))
            name = PurePath(str(state.get("data_name") or "table.parquet")).name
            path = folder / name
            path.write_bytes(store.get(_digest(inputs, "data")))
            ctx.spec = ctx.spec.with_data_file(path)
        elif part in ("train", "test"):
            rows = _digest(inputs, "rows")
            key = f"{rows}:{part}"
            setattr(ctx, part, RECENT.get(key, partial(_split_frame, store, inputs, part)))
        elif part == "frame":
            digest = _digest(inputs, part)
            setattr(ctx, part, RECENT.get(digest, partial(_frame_blob, store, digest)))
        elif part == "estimator":
            kind = str(state.get("estimator_kind") or SKOPS)
            digest = _digest(inputs, "estimator")
            ctx.estimator = RECENT.get(digest, partial(_estimator_blob, store, kind, digest))
        elif part == "exported":
            exported = state.get("exported")
            if not isinstance(exported, dict):
                raise ArtifactError("the export stage's output is missing from the run's state")
            files = {
                name: store.get(_digest(inputs, FILE_PREFIX + name)) for name in exported["files"]
            }
            ctx.exported = ExportedModel(
                format=exported["format"],
                files=files,
                input_schema=exported["input_schema"],
                output_schema=exported["output_schema"],
            )
    return folder


def keep(
    ctx: RunContext, stage: str, inputs: Mapping[str, str], store: ArtifactStore
) -> dict[str, str]:
    """Put what stage ``stage`` wrote in the store; the inputs of the next stage (these
    inputs with the new digests)."""
    outputs = dict(inputs)
    state = _state(inputs, store)
    for part in MAKES[stage]:
        if part in ("frame", "train", "test"):
            frame = getattr(ctx, part)
            assert frame is not None
            before = inputs.get(part)
            earlier = RECENT.peek(before) if before is not None else None
            if before is not None and isinstance(earlier, pd.DataFrame) and frame.equals(earlier):
                # Unchanged (a table validation only checked): the same blob, not a copy.
                RECENT.add(before, frame)
                continue
            outputs[part] = store.put(dump_frame(frame), durable=False)
            RECENT.add(outputs[part], frame)
        elif part == "rows":
            assert ctx.split_rows is not None
            buffer = io.BytesIO()
            np.savez(buffer, train=ctx.split_rows[0], test=ctx.split_rows[1])
            outputs["rows"] = store.put(buffer.getvalue(), durable=False)
            RECENT.add(f"{outputs['rows']}:train", ctx.train)
            RECENT.add(f"{outputs['rows']}:test", ctx.test)
        elif part == "estimator":
            kind, data = dump_estimator(ctx.estimator)
            outputs["estimator"] = store.put(data, durable=False)
            RECENT.add(outputs["estimator"], ctx.estimator)
            state["estimator_kind"] = kind
        elif part == "exported":
            assert ctx.exported is not None
            exported = ctx.exported
            for name, data in exported.files.items():  # register's durable put syncs them
                outputs[FILE_PREFIX + name] = store.put(data, durable=False)
            state["exported"] = {
                "format": exported.format,
                "files": sorted(exported.files),
                "input_schema": exported.input_schema,
                "output_schema": exported.output_schema,
            }
    state.update(
        metrics=ctx.metrics,
        tags=ctx.tags,
        dataset_sha256=ctx.dataset_sha256,
        version=ctx.version.ref if ctx.version is not None else None,
        promotion=asdict(ctx.promotion) if ctx.promotion is not None else None,
    )
    outputs["state"] = store.put(json.dumps(state, sort_keys=True).encode(), durable=False)
    return outputs


def first_state(data_name: str | None, tags: Mapping[str, str] | None = None) -> bytes:
    """The ``state`` a submitted run starts with: the data file's name (its suffix tells
    CSV from Parquet) and the tags its version gets."""
    return json.dumps({"data_name": data_name, "tags": dict(tags or {})}, sort_keys=True).encode()


def _frame_blob(store: ArtifactStore, digest: str) -> pd.DataFrame:
    return load_frame(_scratch(store, digest))


def _split_frame(store: ArtifactStore, inputs: Mapping[str, str], part: str) -> pd.DataFrame:
    """The training or held-out table: the rows ``rows`` names of the table ``frame``."""
    frame_digest = _digest(inputs, "frame")
    frame: pd.DataFrame = RECENT.get(frame_digest, partial(_frame_blob, store, frame_digest))
    with np.load(io.BytesIO(_scratch(store, _digest(inputs, "rows"))), allow_pickle=False) as rows:
        positions = rows[part]
    table: pd.DataFrame = frame.iloc[positions].reset_index(drop=True)
    return table


def _estimator_blob(store: ArtifactStore, kind: str, digest: str) -> Any:
    return load_estimator(kind, _scratch(store, digest))


def _scratch(store: ArtifactStore, digest: str) -> bytes:
    """A scratch blob an earlier stage of the run put; an ``ArtifactError`` that says what
    to do when it is gone or damaged."""
    try:
        return store.get(digest)
    except ArtifactError as error:
        raise ArtifactError(
            f"{error} — it is what an earlier stage of this run handed on; such blobs are not "
            "synced to disk, so a machine that lost power or was reset mid-run may lose them: "
            "submit the run again"
        ) from error


def _digest(inputs: Mapping[str, str], part: str) -> str:
    digest = inputs.get(part)
    if not isinstance(digest, str):
        raise ArtifactError(
            f"the stage event names no {part!r} input; it was not made by this Shipyard "
            "version's previous stage"
        )
    return digest


def _state(inputs: Mapping[str, str], store: ArtifactStore) -> dict[str, Any]:
    digest = inputs.get("state")
    if digest is None:
        return {}
    state = json.loads(_scratch(store, digest))
    if not isinstance(state, dict):
        raise ArtifactError(f"the run state blob {digest} is not a JSON object")
    return state


def _apply_state(ctx: RunContext, state: Mapping[str, Any]) -> None:
    ctx.metrics = dict(state.get("metrics") or {})
    ctx.tags = {**ctx.tags, **(state.get("tags") or {})}
    ctx.dataset_sha256 = state.get("dataset_sha256")
    version = state.get("version")
    if isinstance(version, str):
        ctx.version = ctx.registry.get_version(ModelRef.parse(version))
    promotion = state.get("promotion")
    if isinstance(promotion, dict):
        ctx.promotion = Promotion(**promotion)

"""Storing ground-truth feedback: labels/s of the monitoring store against a bare insert.

For each database (SQLite under a temporary home; PostgreSQL on 127.0.0.1:5432 when it is
reachable, in a fresh database), stores ``--labels`` labels in batches of ``--batch`` and
times, in the same run:

- a bare SQLAlchemy Core ``INSERT`` of the same rows into a table of the same columns and
  unique key, one transaction per batch (the ceiling: no duplicate check, no Shipyard code);
- ``parse_feedback`` of a batch of ``{"id", "label"}`` objects (checking labels, no database);
- ``MonitoringStore.add_feedback`` of fresh ids, and of a batch that is all duplicates;
- ``feedback_after`` reading everything back in pages of ``--batch``;
- ``settle_feedback`` of one batch (what the monitor does after a join).

    python benchmarks/feedback.py [--labels 100000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
)

from shipyard.monitoring.feedback import LabelSchema, parse_feedback
from shipyard.registry import Registry
from shipyard.registry.tables import utcnow
from shipyard.settings import Settings

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
LABELS = LabelSchema("fraud", "classification", ("0", "1"))


@contextmanager
def databases(root: Path) -> Iterator[Iterator[tuple[str, str]]]:
    """(name, URL) of each database to measure; PostgreSQL ones are dropped afterwards."""
    created: list[str] = []

    def urls() -> Iterator[tuple[str, str]]:
        yield "SQLite", f"sqlite:///{root / 'registry.db'}"
        try:
            admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
        except psycopg.OperationalError as error:
            print(f"PostgreSQL skipped: {error}")
            return
        name = f"shipyard_bench_{uuid.uuid4().hex[:10]}"
        with admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        yield "PostgreSQL", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    try:
        yield urls()
    finally:
        if created:
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                for name in created:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(url: str, home: Path, total: int, batch: int) -> dict[str, float]:
    """Labels per second of each step on one database."""
    rates: dict[str, float] = {}
    with Registry.open(Settings(home=home, database_url=url)) as registry:
        registry.register_version(
            "fraud",
            files={"model.onnx": b"x"},
            format="onnx",
            input_schema={"features": ["a"]},
            output_schema={"task": "classification", "classes": [0, 1], "outputs": []},
            metrics={},
        )
        bare = Table(
            "bench_bare_feedback",
            MetaData(),
            Column("seq", Integer, primary_key=True),
            Column("model_id", Integer, nullable=False),
            Column("prediction_id", String(200), nullable=False),
            Column("label", Text, nullable=False),
            Column("received_at", DateTime(timezone=True), nullable=False),
            Column("source", String(16), nullable=False),
            Column("status", String(16), nullable=False),
            UniqueConstraint("model_id", "prediction_id"),
        )
        with registry.transaction(write=True) as session:
            bare.create(session.connection())
        batches = [
            [(f"p-{start + i}", str(i % 2)) for i in range(batch)]
            for start in range(0, total, batch)
        ]
        now = utcnow()

        def bare_insert() -> None:
            for pairs in batches:
                with registry.transaction(write=True) as session:
                    session.execute(
                        insert(bare),
                        [
                            {
                                "model_id": 1,
                                "prediction_id": i,
                                "label": label,
                                "received_at": now,
                                "source": "http",
                                "status": "pending",
                            }
                            for i, label in pairs
                        ],
                    )

        store = registry.monitoring
        items = [{"id": i, "label": int(label)} for i, label in batches[0]]
        rates["bare INSERT (ceiling)"] = total / timed(bare_insert)
        rates["parse_feedback (no database)"] = batch / timed(lambda: parse_feedback(items, LABELS))
        rates["add_feedback, new ids"] = total / timed(
            lambda: [store.add_feedback("fraud", pairs, source="http") for pairs in batches]
        )
        rates["add_feedback, all duplicates"] = batch / timed(
            lambda: store.add_feedback("fraud", batches[0], source="http")
        )

        def read_all() -> None:
            seq, read = 0, 0
            for _ in range(total // batch + 2):
                page = store.feedback_after("fraud", seq, limit=batch)
                if not page:
                    break
                seq, read = page[-1].seq, read + len(page)
            assert read == total, read

        rates["feedback_after, pages"] = total / timed(read_all)
        statuses: dict[str, Any] = {i: "joined" for i, _ in batches[-1]}
        rates["settle_feedback"] = batch / timed(lambda: store.settle_feedback("fraud", statuses))
        assert store.feedback_counts("fraud")["joined"] == batch
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=100_000, help="labels stored in all")
    parser.add_argument("--batch", type=int, default=10_000, help="labels per batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, databases(Path(folder)) as urls:
        results = {
            name: measure(url, Path(folder) / name, args.labels, args.batch) for name, url in urls
        }
    print(f"\n{args.labels:,} labels in batches of {args.batch:,}; labels/s (/ ceiling)\n")
    names = list(results)
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for step in next(iter(results.values())):
        cells = []
        for name in names:
            rate, ceiling = results[name][step], results[name]["bare INSERT (ceiling)"]
            cells.append(f"{rate:,.0f} ({rate / ceiling:.2f}x)")
        print(f"| {step} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

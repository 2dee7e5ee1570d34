"""Scoring a large file: ``shipyard predict`` in-process vs on a local Dask cluster.

Trains the fraud model as examples/fraud/pipeline.yaml does, registers it (signed) in a
temporary home, writes ``--rows`` generated rows as Parquet (row groups of 100,000 rows) and
CSV, and times in one run, verifying, reading and writing included:

- the ceiling: ``Predictor.predict`` alone on the rows already in memory (one thread);
- ``shipyard predict`` in-process (``cli.predict.score_file``: read all, score, write);
- the same on a local cluster of ``--workers`` single-threaded processes
  (``cluster.scoring.score_file_on_cluster``; the cluster's start-up timed apart).

    python benchmarks/score.py [--rows 1000000] [--workers 2] [--formats parquet csv]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from shipyard.cli.predict import score_file
from shipyard.cluster import open_cluster
from shipyard.cluster.scoring import DEFAULT_PARTITION_ROWS, score_file_on_cluster
from shipyard.data import get_dataset, write_table
from shipyard.examples import example_spec
from shipyard.inference import export_model, load_predictor
from shipyard.inference.batch import DEFAULT_BATCH_ROWS
from shipyard.pipeline import load_spec
from shipyard.pipeline.estimators import build_estimator
from shipyard.registry import Registry
from shipyard.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to score")
    parser.add_argument("--train-rows", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=2, help="local cluster's processes")
    parser.add_argument("--partition-rows", type=int, default=DEFAULT_PARTITION_ROWS)
    parser.add_argument("--formats", nargs="+", default=["parquet", "csv"])
    args = parser.parse_args()

    spec, _ = load_spec(example_spec("fraud"))
    dataset = get_dataset("fraud")
    features = dataset.schema.feature_names
    train = dataset.generate(args.train_rows, 7)
    estimator = build_estimator(
        spec.model.type, spec.model.params, scale=spec.model.scale, random_state=42
    )
    with threadpool_limits(1):
        estimator.fit(train[features].to_numpy(np.float32), train[dataset.schema.target])
    exported = export_model(estimator, feature_names=features, task="classification")

    with tempfile.TemporaryDirectory(prefix="shipyard-score-") as folder:
        work = Path(folder)
        with Registry.open(Settings(home=work / "home")) as registry:
            registry.register_version(
                "fraud",
                files=exported.files,
                format=exported.format,
                input_schema=exported.input_schema,
                output_schema=exported.output_schema,
                metrics={"roc_auc": 0.0},
            )
            frame = dataset.generate(args.rows, 11)
            predictor = load_predictor(registry.load_artifact("fraud:1"))
            matrix = np.ascontiguousarray(frame[features].to_numpy(np.float32))
            started = time.perf_counter()
            with threadpool_limits(1):
                for start in range(0, len(matrix), DEFAULT_BATCH_ROWS):
                    predictor.predict(matrix[start : start + DEFAULT_BATCH_ROWS])
            ceiling = args.rows / (time.perf_counter() - started)
            del matrix
            inputs = {}
            for kind in args.formats:
                path = work / f"in.{kind}"
                if kind == "parquet":
                    frame.to_parquet(path, index=False, row_group_size=100_000)
                else:
                    write_table(frame, path)
                inputs[kind] = path
            del frame

            print(
                f"{args.rows:,} fraud rows; {spec.model.type}; ceiling (predict alone, "
                f"1 thread, in memory): {ceiling:,.0f} rows/s"
            )
            started = time.perf_counter()
            with open_cluster(workers=args.workers) as client:
                start_up = time.perf_counter() - started
                print(f"local cluster of {args.workers} workers started in {start_up:.1f} s")
                print(
                    f"{'input':>8} {'in-process':>14} {f'{args.workers} workers':>14}"
                    f" {'cluster/in-process':>19} {'in-process/ceiling':>19}"
                )
                for kind, path in inputs.items():
                    out = work / f"out.{kind}"
                    started = time.perf_counter()
                    score_file(registry, "fraud:1", path, out, batch_rows=DEFAULT_BATCH_ROWS)
                    here = args.rows / (time.perf_counter() - started)
                    started = time.perf_counter()
                    score_file_on_cluster(
                        client,
                        registry.load_artifact("fraud:1"),
                        path,
                        out,
                        partition_rows=args.partition_rows,
                    )
                    there = args.rows / (time.perf_counter() - started)
                    print(
                        f"{kind:>8} {here:>10,.0f} r/s {there:>10,.0f} r/s"
                        f" {there / here:>18.2f}x {here / ceiling:>18.2f}x"
                    )


if __name__ == "__main__":
    main()

"""Single-row and 1,024-row predict latency: Shipyard's ONNX predictor vs scikit-learn.

Trains the fraud model exactly as examples/fraud/pipeline.yaml does, exports it as the
pipeline would, and times in one run (median of repeated calls, one thread everywhere):

- scikit-learn ``predict_proba`` on the original estimator (what a naive server calls);
- a bare ONNX Runtime ``InferenceSession.run`` on the exported graph (the ceiling: no wrapper);
- Shipyard's ``Predictor.predict`` (ONNX Runtime plus output shaping).

    python benchmarks/predict.py [--rows 60000] [--repeat 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from shipyard.data import get_dataset
from shipyard.examples import example_spec
from shipyard.inference import export_model
from shipyard.inference.predictor import predictor_from_files
from shipyard.pipeline import load_spec
from shipyard.pipeline.estimators import build_estimator


def median_seconds(call: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``call`` after a few warm-up calls."""
    for _ in range(10):
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000, help="training rows")
    parser.add_argument("--repeat", type=int, default=300, help="timed calls per cell")
    args = parser.parse_args()

    spec, _ = load_spec(example_spec("fraud"))
    dataset = get_dataset("fraud")
    frame = dataset.generate(args.rows, 7)
    features = dataset.schema.feature_names
    x = frame[features].to_numpy(np.float32)
    y = frame[dataset.schema.target].to_numpy()
    model = spec.model
    estimator = build_estimator(model.type, model.params, scale=model.scale, random_state=42)
    with threadpool_limits(1):
        estimator.fit(x, y)
    exported = export_model(estimator, feature_names=features, task="classification")
    predictor = predictor_from_files(
        "fraud", 1, exported.format, exported.files, exported.input_schema, exported.output_schema
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(exported.files["model.onnx"], options, ["CPUExecutionProvider"])

    print(f"model: {model.type} {model.params}; export format {exported.format}")
    print(
        f"{'batch':>6} {'scikit-learn':>14} {'ORT bare':>12} {'shipyard':>12}"
        f" {'sklearn/shipyard':>17} {'shipyard/bare':>14}"
    )
    with threadpool_limits(1):
        for batch in (1, 1024):
            rows = np.ascontiguousarray(x[:batch])
            sk = median_seconds(lambda rows=rows: estimator.predict_proba(rows), args.repeat)
            bare = median_seconds(lambda rows=rows: session.run(None, {"input": rows}), args.repeat)
            ours = median_seconds(lambda rows=rows: predictor.predict(rows), args.repeat)
            print(
                f"{batch:>6} {sk * 1e6:>11.0f} µs {bare * 1e6:>9.0f} µs {ours * 1e6:>9.0f} µs"
                f" {sk / ours:>16.1f}x {ours / bare:>13.2f}x"
            )


if __name__ == "__main__":
    main()

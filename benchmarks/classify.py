"""Single-image classification over HTTP: Shipyard's batched ``:classify`` vs a naive route.

A small convolutional network on 32×32 RGB images (the shape of the CNN image pipelines
train: three blocks of 3×3 convolution, ReLU and max-pooling with 16, 32 and 64 filters, a
hidden layer of 64; seeded weights, untrained: the figures are about serving, not accuracy) is
defined here in PyTorch and exported to ONNX with ``torch.onnx.export``; the exported graph
takes the flat pixels an image model reads (``shipyard.data.images``: row-major HWC, 0–255)
and does the reshaping and scaling itself. It is registered as ``cnn@production`` in a
temporary home with ``input_schema["image"]``.

One uvicorn process (the stack of ``shipyard serve``) pinned to core 1 serves both routes
(``benchmarks/serve.py``'s way: ``taskset``, ``wrk`` on core 0, warm-up, interleaved rounds,
fastest run reported), each request one PNG (16 different images in rotation, sent as the
raw body ``image/png``):

- ``POST /v1/models/cnn:classify``: Shipyard; the image decoded, its pixels batched with
  other requests' (``max_batch_size`` 64, ``max_batch_delay_ms`` 2), ONNX Runtime;
- ``POST /bench/naive``: what a FastAPI tutorial does: a sync route (thread pool) that
  decodes the PNG with Pillow and runs the same network eagerly in PyTorch, one image per
  call (``torch.set_num_threads(1)``, as ONNX Runtime gets one thread), answering the top 5.

It prints requests/s, p50, p99 and errors of each, and the ratio.

    python benchmarks/classify.py [--duration 10] [--rounds 3] [--connections 32]

Run from the repository with the ``bench`` and ``vision`` extras installed (and ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve import Job, Measurement, Server, Target, log, measure, write_script
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from shipyard.children import Child, free_port, http_ok

HERE = Path(__file__).resolve().parent
SERVER_CORE = "1"
IMAGES = 16
SIZE = 32
CLASSES = 10
# The shape of the CNN image pipelines train (``model.type: cnn``): 3×3 convolution, ReLU
# and 2×2 max-pooling blocks of 16, 32 and 64 filters down to 4×4, a hidden layer of 64,
# inputs normalised per channel (here by CIFAR-10's usual mean and deviation).
FILTERS = (16, 32, 64)
HIDDEN_UNITS = 64
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SHIPYARD_LABEL = "Shipyard :classify (batched, ONNX)"
NAIVE_LABEL = "naive FastAPI + eager PyTorch"


# ---------------------------------------------------------------------------- the network


def network() -> Any:
    """The CNN: flat HWC pixels (0–255) in, (label, class probabilities) out."""
    import torch
    from torch import nn

    class SmallCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            inside = 3
            for out in FILTERS:
                layers += [nn.Conv2d(inside, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
                inside = out
            self.features = nn.Sequential(*layers)
            side = SIZE // 2 ** len(FILTERS)
            self.classifier = nn.Sequential(
                nn.Linear(inside * side * side, HIDDEN_UNITS),
                nn.ReLU(),
                nn.Linear(HIDDEN_UNITS, CLASSES),
            )
            self.register_buffer("mean", torch.tensor(MEAN).reshape(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).reshape(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            images = pixels.reshape(-1, SIZE, SIZE, 3).permute(0, 3, 1, 2) / 255.0
            images = (images - self.mean) / self.std
            logits = self.classifier(self.features(images).flatten(1))
            probabilities = torch.softmax(logits, dim=1)
            return torch.argmax(probabilities, dim=1), probabilities

    torch.manual_seed(0)
    return SmallCnn().eval()


def export(model: Any) -> bytes:
    """The network as ONNX bytes, with a dynamic batch dimension."""
    import torch

    buffer = io.BytesIO()
    example = torch.zeros(1, SIZE * SIZE * 3)
    torch.onnx.export(  # the TorchScript exporter: the dynamo one needs onnxscript
        model,
        (example,),
        buffer,
        input_names=["input"],
        output_names=["label", "probabilities"],
        dynamic_axes={"input": {0: "rows"}, "label": {0: "rows"}, "probabilities": {0: "rows"}},
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()


def register(home: Path, onnx_bytes: bytes) -> None:
    """``cnn:1`` in production, an image model of 32×32 RGB images."""
    from shipyard.data.images import ImageFormat
    from shipyard.inference.formats import ONNX_FILE
    from shipyard.registry import Registry
    from shipyard.settings import Settings

    fmt = ImageFormat(width=SIZE, height=SIZE, mode="RGB")
    names = fmt.feature_names()
    input_schema = {
        "name": "input",
        "dtype": "float32",
        "shape": [-1, len(names)],
        "features": names,
        "image": fmt.model_dump(),
    }
    output_schema = {
        "task": "classification",
        "classes": list(range(CLASSES)),
        "outputs": [
            {"name": "label", "dtype": "int64"},
            {"name": "probabilities", "dtype": "float32", "shape": [-1, CLASSES]},
        ],
    }
    with Registry.open(Settings(home=home)) as registry:
        registry.register_version(
            "cnn",
            files={ONNX_FILE: onnx_bytes},
            format="onnx",
            input_schema=input_schema,
            output_schema=output_schema,
            metrics={},
        )
        registry.promote("cnn:1", "production")


def sample_pngs() -> list[bytes]:
    """``IMAGES`` different 32×32 RGB PNGs: coloured squares on noise."""
    from PIL import Image

    random = np.random.default_rng(1)
    files = []
    for i in range(IMAGES):
        pixels = random.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
        x, y, side = random.integers(0, SIZE // 2, 3)
        pixels[y : y + side + 4, x : x + side + 4] = [(i * 37) % 256, (i * 91) % 256, 200]
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files


# ---------------------------------------------------------------------------- the server


def create_bench_app() -> Any:
    """Shipyard's server plus ``POST /bench/naive`` (uvicorn ``--factory``); the weights
    come from ``BENCH_WEIGHTS``, written by this benchmark a moment before."""
    import torch
    from PIL import Image

    from shipyard.server.app import create_app
    from shipyard.settings import Settings

    torch.set_num_threads(1)
    app = create_app(Settings())
    model = network()
    model.load_state_dict(torch.load(os.environ["BENCH_WEIGHTS"], weights_only=True))

    def classify_eagerly(body: bytes) -> dict[str, Any]:
        image = Image.open(io.BytesIO(body)).convert("RGB").resize((SIZE, SIZE))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(1, -1))
        with torch.no_grad():
            _, probabilities = model(pixels)
        top = torch.topk(probabilities[0], 5)
        ranked = [
            {"label": int(i), "probability": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        return {"label": ranked[0]["label"], "top_k": ranked}

    @app.post("/bench/naive", include_in_schema=False)
    async def naive(request: Request) -> dict[str, Any]:
        body = await request.body()
        # What tutorials do: the model call in the thread pool, one image at a time.
        return await run_in_threadpool(classify_eagerly, body)

    return app


@contextlib.contextmanager
def server(home: Path, weights: Path) -> Iterator[Server]:
    """The benchmark app in one uvicorn process pinned to ``SERVER_CORE``, once ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            "SHIPYARD_HOME": str(home),
            "SHIPYARD_SERVE_MODELS": json.dumps(["cnn"]),
            "SHIPYARD_PREDICTION_LOG": "off",
            "BENCH_WEIGHTS": str(weights),
            "OMP_NUM_THREADS": "1",
        }
    )
    command = [
        "taskset", "-c", SERVER_CORE, sys.executable, "-m", "uvicorn",
        "classify:create_bench_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    child = Child(
        command,
        cwd=home.parent,
        env=env,
        log=home.parent / f"server-{port}.log",
        new_session=True,
        name="the classification benchmark server",
    )
    with child.start(http_ok(f"{url}/v2/health/ready"), timeout_s=120):
        yield Server(url, child)


def check(url: str, target: Target) -> list[int]:
    """Send every image once; each must get 200 with a label. Returns the labels."""
    labels = []
    for body in target.bodies:
        response = httpx.post(
            url + target.path, content=body, headers={"content-type": "image/png"}, timeout=30
        )
        if response.status_code != 200:
            raise RuntimeError(f"{target.label}: {response.status_code} {response.text}")
        labels.append(response.json()["label"])
    return labels


def print_table(rows: dict[str, Measurement]) -> None:
    """A Markdown table of both routes and Shipyard's ratio to the naive route."""
    naive = rows[NAIVE_LABEL].requests_per_s
    print("| target | req/s | p50 | p99 | errors | × naive | server CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, m in rows.items():
        print(
            f"| {label} | {m.requests_per_s:,.0f} | {m.p50_ms:.2f} ms | {m.p99_ms:.2f} ms"
            f" | {m.errors} | {m.requests_per_s / naive:.2f}x | {m.server_cores:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per target")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load per target first")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="shipyard-bench-classify-") as folder:
        root = Path(folder)
        home = root / "home"
        model = network()
        weights = root / "cnn.pt"
        torch.save(model.state_dict(), weights)
        log("exporting the CNN to ONNX and registering cnn:1…")
        register(home, export(model))
        pngs = sample_pngs()
        targets = [
            Target(SHIPYARD_LABEL, "/v1/models/cnn:classify", "image/png", pngs),
            Target(NAIVE_LABEL, "/bench/naive", "image/png", pngs),
        ]
        with server(home, weights) as running:
            shipyard_labels, naive_labels = (check(running.url, t) for t in targets)
            if shipyard_labels != naive_labels:
                raise RuntimeError(f"the routes disagree: {shipyard_labels} vs {naive_labels}")
            jobs = [Job(t.label, running, write_script(t, root)) for t in targets]
            log(
                f"wrk: {args.connections} connections, {args.rounds} rounds of "
                f"{args.duration:g} s per target (server on core {SERVER_CORE})"
            )
            results = measure(
                jobs,
                rounds=args.rounds,
                seconds=args.duration,
                warmup=args.warmup,
                connections=args.connections,
            )
        print_table(results)
        ratio = results[SHIPYARD_LABEL].requests_per_s / results[NAIVE_LABEL].requests_per_s
        print(f"\nShipyard answers {ratio:.1f}× the naive route's requests per second.")


if __name__ == "__main__":
    main()

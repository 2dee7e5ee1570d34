"""Image pipelines end to end: each image source through every stage to a registered ONNX
model whose manifest records the image format, at the accuracy the issue asks for."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shipyard.data.cifar import write_cifar
from shipyard.data.images import ImageFormat, load_digits, write_image_folder
from shipyard.data.shapes import SHAPE_CLASSES, generate_shapes
from shipyard.errors import InvalidInputError
from shipyard.examples import example_spec
from shipyard.inference.predictor import load_predictor
from shipyard.messaging import open_broker
from shipyard.pipeline import Runner, load_spec, parse_spec
from shipyard.pipeline.runner import RunResult
from shipyard.pipeline.workers import WorkerConfig
from shipyard.registry import Registry, RunInfo
from shipyard.settings import Settings
from stage_runs import running_worker, submit, until_ended

SPEC = """\
name: {name}
data:
  images: {images}
task: image_classification
model: {{name: {name}, type: {type}, scale: {scale}, params: {params}}}
split: {{test_size: 0.2, random_state: 42}}
metrics: [accuracy, balanced_accuracy]
promotion: {{require: always}}
"""


@pytest.fixture
def registry(home: Path) -> Iterator[Registry]:
    with Registry.open(Settings(home=home)) as opened:
        yield opened


def _run(registry: Registry, name: str, images: str, type: str, params: str = "{}") -> RunResult:
    scale = "true" if type == "mlp" else "false"
    text = SPEC.format(name=name, images=images, type=type, scale=scale, params=params)
    return Runner(registry).run(parse_spec(text), text)


def test_the_digits_example_trains_an_mlp_of_97_percent(registry: Registry) -> None:
    spec, text = load_spec(example_spec("digits"))
    result = Runner(registry).run(spec, text)
    assert result.metrics["accuracy"] >= 0.97, result.metrics
    assert result.metrics["export_label_agreement"] >= 0.995
    version = result.version
    assert version.format == "onnx"
    assert version.input_schema["image"] == {
        "width": 8,
        "height": 8,
        "mode": "L",
        "max_value": 16.0,
    }
    assert version.input_schema["shape"] == [-1, 64]
    assert version.output_schema["classes"] == list(range(10))


@pytest.mark.timeout(300)
def test_a_cnn_on_digits_reaches_97_percent_through_stage_workers(registry: Registry) -> None:
    """Submitted to stage workers: the fitted network goes from the train stage to the
    evaluate, export and register stages through its own bytes (no pickle), and the run
    ends as in-process."""
    pytest.importorskip("torch")
    text = SPEC.format(
        name="digits-cnn",
        images="{dataset: digits}",
        type="cnn",
        scale="false",
        params="{filters: 32}",
    )
    url = f"memory://images-{uuid.uuid4().hex}"

    async def through_workers() -> RunInfo:
        broker = open_broker(url)
        run_id = await submit(registry, broker, "pipeline", text)
        config = WorkerConfig(prefix="pipeline", worker="test:1", poll_ms=50)
        async with running_worker(url, registry, config):
            run = await until_ended(registry, run_id, timeout_s=240)
        await broker.close()
        return run

    run = asyncio.run(through_workers())
    assert run.status == "succeeded", run.error
    assert run.metrics["accuracy"] >= 0.97, run.metrics
    version = registry.versions_of_runs([run.id])[run.id]
    assert version.metrics["export_label_agreement"] >= 0.995
    assert version.input_schema["image"]["max_value"] == 16.0
    assert version.format == "onnx"


@pytest.mark.timeout(300)
def test_a_cnn_on_a_cifar_10_folder_reaches_95_percent_and_names_its_classes(
    registry: Registry, tmp_path: Path
) -> None:
    """2,000 generated shapes written as CIFAR-10 binary files, read by the CIFAR reader."""
    pytest.importorskip("torch")
    images, labels = generate_shapes(2000, seed=11)
    write_cifar(tmp_path / "cifar-10-batches-bin", images, labels, SHAPE_CLASSES)
    result = _run(registry, "shapes", f"{{cifar: {tmp_path / 'cifar-10-batches-bin'}}}", "cnn")
    assert result.metrics["accuracy"] >= 0.95, result.metrics
    assert result.metrics["export_label_agreement"] >= 0.995
    version = result.version
    assert version.format == "onnx"
    expected = ImageFormat(width=32, height=32, mode="RGB")
    assert version.input_schema["image"] == expected.model_dump()
    assert version.output_schema["classes"] == sorted(SHAPE_CLASSES)
    # The registered artifact serves raw pixels: the first image of the set, as sent.
    predictor = load_predictor(registry.load_artifact(version.ref))
    outputs = predictor.predict(images[:1].reshape(1, -1).astype(np.float32))
    assert outputs["label"].tolist() == [SHAPE_CLASSES[labels[0]]]
    # The reference profile keeps a sample of the 3,072 pixels, not all of them.
    profile = registry.get_profile(version.ref)
    assert profile is not None
    assert len(profile["features"]) == 64
    assert len(json.dumps(profile)) < 1_000_000


def test_an_image_folder_trains_on_what_serving_would_send(
    registry: Registry, tmp_path: Path
) -> None:
    digits = load_digits()
    write_image_folder(digits, tmp_path / "digits")
    images = f"{{folder: {tmp_path / 'digits'}, width: 8, height: 8, mode: L, max_value: 16}}"
    result = _run(registry, "folder", images, "mlp", "{hidden_layer_sizes: [128], max_iter: 300}")
    assert result.metrics["accuracy"] >= 0.95, result.metrics
    assert result.version.output_schema["classes"] == [str(n) for n in range(10)]


def test_a_bad_image_folder_fails_the_run_at_ingest(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "pics" / "only").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match=r"1 class folder\(s\) \(only\)"):
        _run(registry, "bad", f"{{folder: {tmp_path / 'pics'}, width: 8, height: 8}}", "mlp")
    assert registry.runs.recent("bad")[0].status == "failed"

"""A small convolutional network for image pipelines (``model.type: cnn``), in PyTorch.

``ConvNetClassifier`` follows scikit-learn's estimator contract: ``__init__`` stores the
parameters, ``fit(X, y)`` trains and returns ``self``, ``predict`` and ``predict_proba``
read the flat pixel matrix an image model consumes (``data/images.py``: rows of
``pixel_0 …``, channel-last, 0–``max_value``). The network itself does the preprocessing —
scale to 0–1, normalise each channel by the training images' mean and deviation, reshape to
NCHW — so the exported ONNX graph takes the raw pixels a client's image becomes.

The layers: blocks of 3×3 convolution, ReLU and 2×2 max-pooling (``filters`` channels,
doubling per block) until a side is at most 4 pixels (one block for 8×8 digits, three for
32×32 images), then a hidden layer of 64 and the
class scores. Training is full-precision Adam on the CPU, seeded by ``random_state``
(initial weights and batch order), which gives the same weights on the same machine.

PyTorch is an extra (``pip install 'shipyard-ml[vision]'``): it is imported only to fit,
predict, export or rebuild a network, never to build a spec or list the estimators.
``to_bytes``/``from_bytes`` pass a fitted network between processes as ``np.savez`` arrays
and JSON (read back with ``allow_pickle=False``): no pickle, no ``torch.load``.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin

from shipyard.errors import ConfigurationError, InvalidInputError

#: The ONNX opset of exported networks, as skl2onnx's exports (``inference/formats.py``).
ONNX_OPSET = 17
#: Units of the hidden layer between the convolutions and the class scores.
HIDDEN_UNITS = 64
#: Rows scored at once by ``predict_proba`` (bounds memory on large inputs).
PREDICT_BATCH = 1024


def import_torch() -> Any:
    """``torch``, or a ``ConfigurationError`` saying how to install it."""
    try:
        import torch
    except ImportError as error:
        raise ConfigurationError(
            "model.type cnn needs PyTorch, which is not installed: "
            "pip install 'shipyard-ml[vision]' (the CPU build is enough), or use "
            "model.type mlp, which needs no extra"
        ) from error
    return torch


class ConvNetClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A convolutional image classifier over flat channel-last pixel rows.

    ``height``, ``width``, ``channels`` and ``max_value`` describe the images (a pipeline sets
    them from its image format); the rest are training parameters."""

    def __init__(
        self,
        *,
        filters: int = 16,
        epochs: int = 12,
        batch_size: int = 64,
        learning_rate: float = 0.003,
        weight_decay: float = 0.0001,
        random_state: int | None = None,
        height: int | None = None,
        width: int | None = None,
        channels: int | None = None,
        max_value: float = 255.0,
    ) -> None:
        self.filters = filters
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.height = height
        self.width = width
        self.channels = channels
        self.max_value = max_value

    def _shape(self, n_features: int) -> tuple[int, int, int]:
        if self.height is None or self.width is None or self.channels is None:
            raise InvalidInputError(
                "ConvNetClassifier needs the image size: set height, width and channels "
                "(a pipeline with task image_classification sets them from data.images)"
            )
        if self.height * self.width * self.channels != n_features:
            raise InvalidInputError(
                f"{n_features} features are not {self.height}×{self.width} images of "
                f"{self.channels} channel(s) ({self.height * self.width * self.channels})"
            )
        return self.height, self.width, self.channels

    def _check_params(self) -> None:
        for name in ("filters", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name} must be a whole number ≥ 1, not {value!r}")
        for name in ("learning_rate", "max_value"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise InvalidInputError(f"{name} must be a number > 0, not {value!r}")
        if not isinstance(self.weight_decay, int | float) or self.weight_decay < 0:
            raise InvalidInputError(f"weight_decay must be ≥ 0, not {self.weight_decay!r}")

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> Self:  # noqa: N803 (sklearn names)
        """Train on rows of pixels ``X`` and labels ``y``."""
        torch = import_torch()
        self._check_params()
        features = np.array(X, dtype=np.float32)  # a copy torch may write to
        labels = np.asarray(y)
        if features.ndim != 2 or len(features) != len(labels) or len(features) == 0:
            raise InvalidInputError(
                f"fit takes a matrix of pixel rows and one label per row, not shapes "
                f"{features.shape} and {labels.shape}"
            )
        channels = self._shape(features.shape[1])[2]
        self.classes_, targets = np.unique(labels, return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidInputError("a classifier needs rows of at least 2 classes")
        self.n_features_in_ = features.shape[1]
        per_channel = features.reshape(-1, channels) / np.float32(self.max_value)
        self.channel_mean_ = per_channel.mean(axis=0).astype(np.float32)
        self.channel_std_ = np.maximum(per_channel.std(axis=0), 1e-3).astype(np.float32)
        seed = 0 if self.random_state is None else int(self.random_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = self._network(torch)
        order = torch.Generator().manual_seed(seed)
        inputs = torch.from_numpy(features)
        outputs = torch.from_numpy(targets.astype(np.int64))
        optimiser = torch.optim.Adam(
            network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        steps = self.epochs * math.ceil(len(features) / self.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=self.learning_rate, total_steps=steps
        )
        loss_function = torch.nn.CrossEntropyLoss()
        network.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(features), generator=order).split(self.batch_size):
                optimiser.zero_grad()
                loss = loss_function(network.logits(inputs[batch]), outputs[batch])
                loss.backward()
                optimiser.step()
                schedule.step()
        network.eval()
        self.network_ = network
        return self

    def _network(self, torch: Any) -> Any:
        height, width, channels = self._shape(self.n_features_in_)
        return _build_network(
            torch,
            height=height,
            width=width,
            channels=channels,
            filters=self.filters,
            classes=len(self.classes_),
            max_value=float(self.max_value),
            mean=self.channel_mean_,
            std=self.channel_std_,
        )

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:  # noqa: N803
        """Class probabilities, one column per class of ``classes_``."""
        torch = import_torch()
        features = np.ascontiguousarray(X, dtype=np.float32)
        self._shape(features.shape[1] if features.ndim == 2 else -1)
        parts = []
        with torch.no_grad():
            for start in range(0, len(features), PREDICT_BATCH):
                chunk = torch.from_numpy(np.array(features[start : start + PREDICT_BATCH]))
                parts.append(self.network_(chunk).numpy().astype(np.float64))
        if not parts:
            return np.empty((0, len(self.classes_)), dtype=np.float64)
        proba = np.concatenate(parts)
        # float32 softmax rows sum to 1 within 1e-7; metrics such as log_loss want float64's.
        normalised: npt.NDArray[np.float64] = proba / proba.sum(axis=1, keepdims=True)
        return normalised

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:  # noqa: N803
        """The most probable class of each row."""
        return np.asarray(self.classes_[np.argmax(self.predict_proba(X), axis=1)])

    def to_onnx(self, input_name: str) -> bytes:
        """The fitted network as an ONNX graph: input ``input_name`` (rows of raw pixels,
        float32), outputs ``probabilities`` and ``label`` (the class, as ``classes_``)."""
        torch = import_torch()
        import onnx
        from onnx import TensorProto, helper

        buffer = io.BytesIO()
        example = torch.zeros((2, self.n_features_in_), dtype=torch.float32)
        with warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False) is deprecated in favour of one that
            # needs onnxscript; it is the one that needs no further dependency on torch 2.13.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                self.network_,
                (example,),
                buffer,
                dynamo=False,
                input_names=[input_name],
                output_names=["probabilities"],
                dynamic_axes={input_name: {0: "rows"}, "probabilities": {0: "rows"}},
                opset_version=ONNX_OPSET,
            )
        model = onnx.load_from_string(buffer.getvalue())
        classes = [_plain(c) for c in self.classes_.tolist()]
        if all(isinstance(c, int) for c in classes):
            table = helper.make_tensor("classes", TensorProto.INT64, [len(classes)], classes)
            label_type = TensorProto.INT64
        else:
            encoded = [str(c).encode() for c in classes]
            table = helper.make_tensor(
                "classes",
                TensorProto.STRING,
                [len(classes)],
                encoded,  # type: ignore[arg-type]  # onnx's stubs omit string tensors
            )
            label_type = TensorProto.STRING
        graph = model.graph
        graph.initializer.append(table)
        graph.node.extend(
            [
                helper.make_node("ArgMax", ["probabilities"], ["best"], axis=1, keepdims=0),
                helper.make_node("Gather", ["classes", "best"], ["label"], axis=0),
            ]
        )
        graph.output.append(helper.make_tensor_value_info("label", label_type, ["rows"]))
        onnx.checker.check_model(model)
        data: bytes = model.SerializeToString()
        return data

    def to_bytes(self) -> bytes:
        """The fitted network as ``np.savez`` bytes: its weights, and its parameters and
        classes as JSON; ``from_bytes`` reads them back without pickle."""
        state = {f"state.{key}": value.numpy() for key, value in self.network_.state_dict().items()}
        meta = {
            "params": self.get_params(),
            "classes": [_plain(c) for c in self.classes_.tolist()],
            "n_features_in": self.n_features_in_,
            "channel_mean": self.channel_mean_.tolist(),
            "channel_std": self.channel_std_.tolist(),
        }
        buffer = io.BytesIO()
        encoded = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(buffer, meta=encoded, **state)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """A fitted network from ``to_bytes`` output (``allow_pickle=False``)."""
        torch = import_torch()
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode())
            estimator = cls(**meta["params"])
            estimator.classes_ = np.asarray(meta["classes"], dtype=_class_dtype(meta["classes"]))
            estimator.n_features_in_ = int(meta["n_features_in"])
            estimator.channel_mean_ = np.asarray(meta["channel_mean"], dtype=np.float32)
            estimator.channel_std_ = np.asarray(meta["channel_std"], dtype=np.float32)
            network = estimator._network(torch)
            state = {
                name.removeprefix("state."): torch.from_numpy(np.array(value))
                for name, value in arrays.items()
            }
            network.load_state_dict(state)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise InvalidInputError(
                f"these {len(data):,} bytes are not a ConvNetClassifier.to_bytes() output ({error})"
            ) from error
        network.eval()
        estimator.network_ = network
        return estimator


def _class_dtype(classes: list[Any]) -> type:
    return np.int64 if all(isinstance(c, int) for c in classes) else object


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _build_network(
    torch: Any,
    *,
    height: int,
    width: int,
    channels: int,
    filters: int,
    classes: int,
    max_value: float,
    mean: npt.NDArray[np.float32],
    std: npt.NDArray[np.float32],
) -> Any:
    """The network: preprocessing, convolution blocks, hidden layer, class probabilities."""
    nn = torch.nn

    class Network(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            side, width_now, inside = height, width, channels
            out = filters
            while True:
                layers += [nn.Conv2d(inside, out, kernel_size=3, padding=1), nn.ReLU()]
                inside = out
                if min(side, width_now) < 8:
                    break  # pooling would leave less than 4 pixels a side
                layers.append(nn.MaxPool2d(2))
                side, width_now = side // 2, width_now // 2
                if min(side, width_now) <= 4:
                    break
                out *= 2
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(inside * side * width_now, HIDDEN_UNITS),
                nn.ReLU(),
                nn.Linear(HIDDEN_UNITS, classes),
            )
            shape = (1, channels, 1, 1)
            self.register_buffer("scale", torch.tensor(1.0 / max_value))
            self.register_buffer("mean", torch.from_numpy(mean.copy()).reshape(shape))
            self.register_buffer("std", torch.from_numpy(std.copy()).reshape(shape))

        def logits(self, pixels: Any) -> Any:
            images = pixels.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
            images = (images * self.scale - self.mean) / self.std
            return self.head(self.features(images))

        def forward(self, pixels: Any) -> Any:
            return torch.softmax(self.logits(pixels), dim=1)

    return Network()

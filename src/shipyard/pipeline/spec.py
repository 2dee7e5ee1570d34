"""The pipeline spec: a YAML file validated by pydantic, with errors that name field and line.

A spec declares where the data comes from and its schema, the task and the model with its
parameters, how to split, which metrics to compute, and when to promote the new version::

    name: fraud
    data:
      path: fraud.parquet        # or generate: {dataset: fraud, …}; or neither, with --data
      dataset: fraud             # built-in schema; or columns: [{name: x, dtype: float64}, …]
      target: Class
    task: classification
    model: {name: fraud, type: HistGradientBoostingClassifier, params: {max_iter: 200}}
    split: {test_size: 0.2, stratify: true, random_state: 42}
    metrics: [average_precision, roc_auc]
    promotion: {alias: production, metric: average_precision, require: beats_current}
    monitoring: {windows: {rows: 1000, minutes: 60}, drift: {drift_share: 0.5}}  # optional
    retrain: {triggers: {drift.detected: true}, gate: {min_delta: 0.01}, cooldown: 1h}  # optional
    ensemble: {learners: 32, features: 0.8, seed: 1}  # optional: bag `model` on a Dask cluster

An image classifier reads labelled images instead of a table (``ImagesSpec``,
``pipeline/images.py``)::

    data:
      images: {dataset: digits}        # or {dataset: shapes, rows: 3000, seed: 1}
                                       # or {cifar: DIR}: a CIFAR-10 binary folder
                                       # or {folder: DIR, width: 32, height: 32, mode: RGB}
    task: image_classification
    model: {name: digits, type: cnn}   # or mlp (no extra), or any other classifier

Its table has the columns ``pixel_0 …`` of the images' format (``data/images.py``) and the
target ``label`` (the default of ``data.target`` here), so every stage treats it as a table.

``ensemble`` (``EnsembleSpec``) makes ``model`` the learner of a bagged ensemble whose learners
are fitted as tasks on a Dask cluster (``pipeline/ensemble.py``).
``monitoring`` (``monitoring/config.py``) and ``retrain`` (``monitoring/retraining.py``) are
stored with each registered version, as JSON in its ``monitoring`` and ``retrain`` tags, for
``shipyard monitor``; they live below the pipeline so that the monitor reads them without it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shipyard.data import DATASETS, Column, ImageFormat, TableSchema, get_dataset
from shipyard.errors import NotFoundError, SpecError
from shipyard.examples import example_names, example_spec
from shipyard.monitoring.config import MonitoringSpec
from shipyard.monitoring.retraining import RetrainSpec
from shipyard.pipeline.estimators import ESTIMATORS, METRICS, Task
from shipyard.pipeline.images import ImagesSpec
from shipyard.registry import DEFAULT_ALIAS

#: The pydantic error type of an estimator parameter the estimator does not take.
_UNKNOWN_PARAMETER = "unknown_parameter"
#: The pydantic error type of a whole-spec rule about one field (``ctx["at"]``: its path).
_AT_FIELD = "at_field"
#: The parameters of an image model that its images' format sets.
_IMAGE_SIZE_PARAMS = ("height", "width", "channels", "max_value")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_dataset(name: str | None) -> str | None:
    if name is not None and name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return name


class GenerateSpec(_Strict):
    """Make the data with a built-in generator instead of reading a file."""

    dataset: Annotated[str, AfterValidator(_known_dataset)]
    rows: int = Field(gt=0)
    seed: int = 0


class DataSpec(_Strict):
    """Where the table comes from and what its columns must be."""

    path: Path | None = None
    generate: GenerateSpec | None = None
    images: ImagesSpec | None = None
    """Labelled images; with ``path`` too, only their format: the table of their pixels is
    read from ``path`` (as ``--data FILE`` does)."""
    dataset: Annotated[str | None, AfterValidator(_known_dataset)] = None
    columns: list[Column] | None = None
    target: str

    @model_validator(mode="before")
    @classmethod
    def _label_target(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("images") is not None and "target" not in data:
            return {**data, "target": "label"}
        return data

    @model_validator(mode="after")
    def _one_source_one_schema(self) -> Self:
        if self.images is not None:
            if self.generate is not None or self.dataset is not None or self.columns is not None:
                raise ValueError(
                    "`images` is both the source and the schema: leave out `generate`, "
                    "`dataset` and `columns`"
                )
            return self
        if (self.path is None) == (self.generate is None):
            raise ValueError(
                "give exactly one of `path` (a CSV/Parquet file) or `generate`, "
                "or the file with --data"
            )
        if self.columns is None and self.dataset is None:
            if self.generate is None:
                raise ValueError("give the schema: `dataset: NAME` or a `columns` list")
        elif self.columns is not None and self.dataset is not None:
            raise ValueError("give `dataset` or `columns`, not both")
        return self

    def table_schema(self) -> TableSchema:
        """The table schema this spec declares, with its target."""
        if self.images is not None:
            columns = self.images.columns(self.target)
        elif self.columns is not None:
            columns = self.columns
        else:
            name = self.dataset or (self.generate.dataset if self.generate else "")
            columns = get_dataset(name).schema.columns
        try:
            return TableSchema(columns=columns, target=self.target)
        except ValidationError as error:
            raise SpecError(f"data.target: {_first_message(error)}") from error


class ModelSpec(_Strict):
    """The registered model's name and the estimator that trains it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    scale: bool = False
    format: Literal["auto", "onnx", "skops"] = "auto"

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in ESTIMATORS:
            raise ValueError(
                f"unknown model type {value!r}; choose one of {', '.join(sorted(ESTIMATORS))}"
            )
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Checked against the estimator's own parameter names (no fitting), so a misspelling
        # fails when the spec loads, with its line, instead of at the train stage.
        type_name = info.data.get("type")
        if type_name not in ESTIMATORS:
            return value  # the type's own error says what is wrong
        known = sorted(ESTIMATORS[type_name].cls().get_params())
        if ESTIMATORS[type_name].images_only:
            known = [name for name in known if name not in _IMAGE_SIZE_PARAMS]
        for name in value:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
                raise PydanticCustomError(
                    _UNKNOWN_PARAMETER,
                    "unknown parameter {quoted} for {estimator}; {hint}",
                    {"name": name, "quoted": repr(name), "estimator": type_name, "hint": hint},
                )
        return value


class SplitSpec(_Strict):
    """How the held-out evaluation rows are chosen."""

    test_size: float = Field(default=0.2, gt=0, lt=1)
    stratify: bool = True
    random_state: int = 42


class PromotionSpec(_Strict):
    """When the new version takes an alias."""

    alias: str = DEFAULT_ALIAS
    metric: str | None = None
    require: Literal["beats_current", "always", "never"] = "beats_current"
    min_value: float | None = None


class EnsembleSpec(_Strict):
    """``learners`` copies of the spec's model, each fitted on its own sample of the training
    rows and subset of the features with its own seed, averaged (regression) or soft-voted
    (classification) into one model."""

    learners: int = Field(ge=1, le=10_000)
    bootstrap: bool = True
    """Draw each learner's rows with replacement (bagging); without, a subsample."""
    sample_fraction: float = Field(default=1.0, gt=0, le=1)
    """The share of the training rows each learner draws."""
    features: int | float = 1.0
    """Per learner: a share of the features (a number with a point, in (0, 1]) or a count
    (a whole number, at least 1)."""
    seed: int = Field(default=0, ge=0, lt=2**32)
    """Seeds every learner's sample, features and estimator: same seed, same ensemble."""
    min_learners: int | None = Field(default=None, ge=1)
    """How many learners must fit for the run to succeed (default: all of them)."""

    @field_validator("features", mode="before")
    @classmethod
    def _share_or_count(cls, value: object) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"give a share of the features (e.g. 0.8) or a count (e.g. 5), not {value!r}"
            )
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a count of features is at least 1, not {value}")
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError(
                f"a share of the features is in (0, 1], not {value}; "
                "for a count write a whole number"
            )
        return value

    @model_validator(mode="after")
    def _enough(self) -> Self:
        if self.min_learners is not None and self.min_learners > self.learners:
            raise PydanticCustomError(
                _AT_FIELD,
                "min_learners {minimum} is more than the {learners} learners the ensemble "
                "fits; lower ensemble.min_learners or raise ensemble.learners",
                {
                    "at": "ensemble.min_learners",
                    "minimum": self.min_learners,
                    "learners": self.learners,
                },
            )
        return self

    @property
    def required(self) -> int:
        """How many learners must fit (``min_learners``, all by default)."""
        return self.learners if self.min_learners is None else self.min_learners

    def feature_count(self, available: int) -> int:
        """How many of ``available`` features each learner sees."""
        if isinstance(self.features, float):
            return max(1, round(self.features * available))
        return self.features


class Spec(_Strict):
    """A whole pipeline spec."""

    name: str
    description: str = ""
    data: DataSpec
    task: Literal["classification", "regression", "image_classification"] = "classification"
    model: ModelSpec
    split: SplitSpec = SplitSpec()
    metrics: list[str] = Field(default_factory=lambda: ["average_precision", "roc_auc"])
    promotion: PromotionSpec = PromotionSpec()
    monitoring: MonitoringSpec | None = None
    retrain: RetrainSpec | None = None
    ensemble: EnsembleSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        task_type = ESTIMATORS[self.model.type].task
        self._check_images()
        self._check_ensemble()
        if task_type != self.estimator_task:
            raise ValueError(f"model type {self.model.type} is for {task_type}, not {self.task}")
        for metric in self.metrics:
            if metric not in METRICS or METRICS[metric].task != self.estimator_task:
                known = sorted(m for m, d in METRICS.items() if d.task == self.estimator_task)
                raise ValueError(
                    f"unknown {self.task} metric {metric!r}; choose from {', '.join(known)}"
                )
        if self.promotion.require == "beats_current" or self.promotion.min_value is not None:
            metric = self.promotion.metric or self.metrics[0]
            if metric not in self.metrics:
                raise ValueError(f"promotion metric {metric!r} must be listed in `metrics`")
        if self.retrain is not None and self.retrain_metric not in self.metrics:
            raise ValueError(
                f"retrain.gate.metric {self.retrain_metric!r} must be listed in `metrics`"
            )
        if self.retrain is not None and self.promotion.alias != DEFAULT_ALIAS:
            # A retrain judges and replaces the version the monitor watches, which is the one
            # at DEFAULT_ALIAS; promoting elsewhere would compare against the wrong version.
            raise PydanticCustomError(
                _AT_FIELD,
                "a spec with a `retrain:` section promotes to {quoted_expected} (the alias the "
                "monitor watches and retrains), not {quoted_alias}; set `promotion.alias: "
                "{expected}` or remove `retrain:`",
                {
                    "at": "promotion.alias",
                    "quoted_alias": repr(self.promotion.alias),
                    "quoted_expected": repr(DEFAULT_ALIAS),
                    "expected": DEFAULT_ALIAS,
                },
            )
        return self

    def _check_images(self) -> None:
        images = self.task == "image_classification"
        if images and self.data.images is None:
            raise PydanticCustomError(
                _AT_FIELD,
                "task image_classification trains on images: give `data.images` (e.g. "
                "{dataset: digits}, {cifar: DIR} or {folder: DIR, width: 32, height: 32})",
                {"at": "data"},
            )
        if not images and self.data.images is not None:
            raise PydanticCustomError(
                _AT_FIELD,
                "data.images needs `task: image_classification`, not {task}",
                {"at": "task", "task": self.task},
            )
        if not images and ESTIMATORS[self.model.type].images_only:
            raise PydanticCustomError(
                _AT_FIELD,
                "model type {type} trains on images: set `task: image_classification` and "
                "`data.images`",
                {"at": "model.type", "type": self.model.type},
            )
        if images and self.ensemble is not None:
            raise PydanticCustomError(
                _AT_FIELD,
                "an image classifier is not bagged into an ensemble; remove `ensemble:`",
                {"at": "ensemble"},
            )

    def _check_ensemble(self) -> None:
        ensemble = self.ensemble
        if ensemble is None or not isinstance(ensemble.features, int):
            return
        # A count of features needs the schema; a spec whose columns come with --data only
        # is checked when the train stage knows them.
        try:
            available = len(self.data.table_schema().feature_names)
        except SpecError:
            return
        if ensemble.features > available:
            raise PydanticCustomError(
                _AT_FIELD,
                "features {count} is more than the {available} features of the data; give a "
                "count up to {available} or a share such as 0.8",
                {"at": "ensemble.features", "count": ensemble.features, "available": available},
            )

    def with_data_file(self, path: Path) -> Spec:
        """The same spec reading its table from ``path`` instead of its own source."""
        data = self.data
        dataset = data.dataset or (data.generate.dataset if data.generate else None)
        update = {"path": path, "generate": None, "dataset": dataset}
        return self.model_copy(update={"data": data.model_copy(update=update)})

    @property
    def estimator_task(self) -> Task:
        """What the estimator does: an image classifier is a classifier of pixel rows."""
        return "regression" if self.task == "regression" else "classification"

    @property
    def image_format(self) -> ImageFormat | None:
        """The format of an image classifier's images; None for a table model."""
        images = self.data.images
        return images.image_format() if images is not None else None

    @property
    def promotion_metric(self) -> str:
        """The metric the promotion rule compares (the first listed when not given)."""
        return self.promotion.metric or self.metrics[0]

    @property
    def retrain_metric(self) -> str:
        """The metric a retrained candidate is gated on (default the promotion metric)."""
        gate = self.retrain.gate if self.retrain is not None else None
        return (gate.metric if gate is not None else None) or self.promotion_metric


def find_spec(source: str | Path) -> Path:
    """The spec file ``source`` names: a file, or else the name of a packaged example."""
    path = Path(source)
    if path.is_file():
        return path
    name = str(source)
    if path.suffix == "" and "/" not in name and "\\" not in name:
        try:
            return example_spec(name)
        except NotFoundError:
            raise SpecError(
                f"no spec file {name!r} here ({Path.cwd()}) and no packaged example of that "
                f"name; examples: {', '.join(example_names())} (`shipyard examples list`)"
            ) from None
    if path.is_dir():
        raise SpecError(f"{path.absolute()} is a folder; give the spec file in it")
    raise SpecError(
        f"no spec file at {path.absolute()}; `shipyard examples list` shows the packaged "
        "examples, which run by name (`shipyard pipeline run fraud`) or copy into a folder "
        "(`shipyard examples copy fraud`)"
    )


def load_spec(source: str | Path, *, data_file: Path | None = None) -> tuple[Spec, str]:
    """Read, parse and validate a spec (a file, or a packaged example's name); return it
    with its text (kept for lineage). ``data_file`` replaces the spec's own data source."""
    path = find_spec(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read spec {path}: {error}") from error
    spec = parse_spec(text, source=str(path), data_file=data_file)
    data = spec.data
    if data_file is None and data.path is not None and not data.path.is_absolute():
        # Relative data paths are relative to the spec file, not to wherever the CLI runs.
        data = data.model_copy(update={"path": path.parent / data.path})
    if data.images is not None:
        data = data.model_copy(update={"images": data.images.relative_to(path.parent)})
    if data is not spec.data:
        spec = spec.model_copy(update={"data": data})
    return spec, text


def parse_spec(text: str, *, source: str = "<spec>", data_file: Path | None = None) -> Spec:
    """Validate spec text; errors name the source, the line and the field. ``data_file``
    replaces the spec's data source, so a spec may leave it out."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(f"{source}{where}: not valid YAML: {problem}") from error
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a YAML mapping with keys name, data, model, …")
    lines = _line_numbers(node)
    if data_file is not None and isinstance(raw.get("data"), dict):
        raw = {**raw, "data": _with_file(raw["data"], data_file)}
    try:
        return Spec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(_describe(error, lines, source)) from error


def _with_file(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A spec's raw ``data`` reading ``path``; a generator's dataset stays the schema."""
    replaced = {key: value for key, value in data.items() if key != "generate"}
    generate = data.get("generate")
    if isinstance(generate, dict) and "dataset" not in data and "columns" not in data:
        replaced["dataset"] = generate.get("dataset")
    return {**replaced, "path": path}


def _line_numbers(node: yaml.Node | None) -> dict[tuple[str | int, ...], int]:
    """Map each key path of a YAML document to the 1-based line where it appears."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(current: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines[path] = current.start_mark.line + 1
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                child = (*path, str(key.value))
                walk(value, child)
                lines[child] = key.start_mark.line + 1
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                walk(item, (*path, index))

    if node is not None:
        walk(node, ())
    return lines


def _describe(error: ValidationError, lines: dict[tuple[str | int, ...], int], source: str) -> str:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        if item["type"] == _AT_FIELD:  # a rule of the whole spec about one field of it
            loc = tuple(str(item["ctx"]["at"]).split("."))
        where_in_file = loc
        if item["type"] == _UNKNOWN_PARAMETER:  # the line of the parameter, not of `params`
            where_in_file = (*loc, item["ctx"]["name"])
        # The deepest prefix of the location that exists in the file carries the line.
        line = next(
            (
                lines[where_in_file[:n]]
                for n in range(len(where_in_file), -1, -1)
                if where_in_file[:n] in lines
            ),
            None,
        )
        field = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {field}: {message}")
    return "; ".join(problems)


def _first_message(error: ValidationError) -> str:
    return str(error.errors()[0]["msg"]).removeprefix("Value error, ")

"""The stages of a pipeline run, each a class with one job over a shared ``RunContext``.

ingest → validate → split → train → evaluate → export → register → promote
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from shipyard.data import TableSchema, file_sha256, get_dataset, profile_frame, read_table
from shipyard.data.images import profiled_schema
from shipyard.errors import AliasNotFoundError, InvalidInputError, SpecError
from shipyard.inference import ExportedModel, export_model
from shipyard.inference.predictor import predictor_from_files
from shipyard.monitoring.config import TAG as MONITORING_TAG
from shipyard.monitoring.retraining import TAG as RETRAIN_TAG
from shipyard.pipeline.ensemble import ClusterOptions, LearnerListener, train_ensemble
from shipyard.pipeline.estimators import METRICS, build_estimator
from shipyard.pipeline.spec import Spec
from shipyard.registry import ModelRef, ModelVersionInfo, Registry

logger = logging.getLogger(__name__)


def _sklearn_error() -> type[Exception]:
    """scikit-learn's error for bad estimator parameters. scikit-learn is imported where a
    stage uses it, not with this module: the server imports the stage names to queue runs,
    and importing scikit-learn takes about a second of its start."""
    from sklearn.utils._param_validation import InvalidParameterError

    error: type[Exception] = InvalidParameterError
    return error


# An exported model whose labels disagree with the trained estimator on more held-out rows
# than this is refused: the artifact would not be the model that was evaluated.
MIN_EXPORT_AGREEMENT = 0.995
# A regressor's exported prediction agrees with the trained one on a row when it is within
# this share of the prediction (or of the mean absolute prediction, for values near zero).
# ONNX runs trees in float32: a row whose feature lies within float32 rounding of a split
# threshold may take the other branch (seen: 18,590 € off on one row of a price model), so
# a few such rows are accepted, as a classifier's few flipped labels are; an export that
# is wrong in general disagrees on many rows and is refused.
EXPORT_RELATIVE_TOLERANCE = 1e-3


@dataclass
class Promotion:
    """What the promote stage decided and why."""

    promoted: bool
    alias: str
    reason: str
    previous: int | None = None


@dataclass
class RunContext:
    """State handed from stage to stage during one run."""

    spec: Spec
    registry: Registry
    run_id: str
    schema: TableSchema = field(init=False)
    frame: pd.DataFrame | None = None
    dataset_sha256: str | None = None
    train: pd.DataFrame | None = None
    test: pd.DataFrame | None = None
    estimator: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    exported: ExportedModel | None = None
    version: ModelVersionInfo | None = None
    promotion: Promotion | None = None
    tags: dict[str, str] = field(default_factory=dict)
    """Tags the registered version gets beside the spec's (e.g. the retrain attempt)."""
    split_rows: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None = None
    """The positions in ``frame`` of the training and the held-out rows."""
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    """Where an ensemble's learners are fitted (only a spec with ``ensemble:`` uses it)."""
    learner_listener: LearnerListener | None = None

    def __post_init__(self) -> None:
        self.schema = self.spec.data.table_schema()

    def split_xy(self, frame: pd.DataFrame | None) -> tuple[npt.NDArray[np.float32], pd.Series]:
        """Features as float32 (what the exported model consumes) and the target column."""
        assert frame is not None
        assert self.schema.target is not None
        features = frame[self.schema.feature_names].to_numpy(dtype=np.float32)
        return features, frame[self.schema.target]


class Stage(Protocol):
    """One step of a run."""

    name: ClassVar[str]

    def run(self, ctx: RunContext) -> None:
        """Do this stage's job, reading and writing the context."""
        ...


class Ingest:
    """Read the table from its file, or generate it, and fingerprint it for lineage."""

    name: ClassVar[str] = "ingest"

    def run(self, ctx: RunContext) -> None:
        """Load the raw table."""
        data = ctx.spec.data
        if data.path is not None:
            ctx.frame = read_table(data.path)
            ctx.dataset_sha256 = file_sha256(data.path)
            return
        if data.images is not None:
            images = data.images.load()
            ctx.frame, ctx.dataset_sha256 = images.frame(data.target), images.digest()
            return
        assert data.generate is not None
        generate = data.generate
        ctx.frame = get_dataset(generate.dataset).generate(generate.rows, generate.seed)
        digest = hashlib.sha256(
            pd.util.hash_pandas_object(ctx.frame, index=False).to_numpy().tobytes()
        )
        ctx.dataset_sha256 = digest.hexdigest()


class Validate:
    """Check the table against the schema and that the target can be learned."""

    name: ClassVar[str] = "validate"

    def run(self, ctx: RunContext) -> None:
        """Replace the raw table by its validated, typed form."""
        assert ctx.frame is not None
        frame = ctx.schema.validate_frame(ctx.frame, require_target=True)
        target = frame[ctx.spec.data.target]
        if len(frame) < 10:
            raise InvalidInputError(f"only {len(frame)} rows; a pipeline needs at least 10")
        if ctx.spec.estimator_task == "classification":
            counts = target.value_counts()
            if len(counts) < 2:
                raise InvalidInputError(
                    f"target {target.name!r} has a single class ({counts.index[0]!r}); "
                    "a classifier needs at least two"
                )
            if ctx.spec.split.stratify and counts.min() < 2:
                raise InvalidInputError(
                    f"class {counts.idxmin()!r} of {target.name!r} has {counts.min()} row; "
                    "stratified splitting needs 2 per class (or set split.stratify: false)"
                )
        ctx.frame = frame


class Split:
    """Hold out the evaluation rows."""

    name: ClassVar[str] = "split"

    def run(self, ctx: RunContext) -> None:
        """Split into train and test tables."""
        assert ctx.frame is not None
        split = ctx.spec.split
        stratify = None
        if ctx.spec.estimator_task == "classification" and split.stratify:
            stratify = ctx.frame[ctx.spec.data.target]
        from sklearn.model_selection import train_test_split  # see _sklearn_error

        # The row positions are split (the same shuffle as splitting the table itself), so a
        # stage worker hands on two index arrays rather than a copy of the table.
        train_rows, test_rows = train_test_split(
            np.arange(len(ctx.frame)),
            test_size=split.test_size,
            random_state=split.random_state,
            stratify=stratify,
        )
        ctx.split_rows = (train_rows, test_rows)
        ctx.train = ctx.frame.iloc[train_rows].reset_index(drop=True)
        ctx.test = ctx.frame.iloc[test_rows].reset_index(drop=True)


class Train:
    """Fit the spec's estimator on the training rows: in this process, or, for a spec with
    ``ensemble:``, as one task per learner on a Dask cluster."""

    name: ClassVar[str] = "train"

    def run(self, ctx: RunContext) -> None:
        """Build and fit the estimator."""
        model = ctx.spec.model
        if ctx.spec.ensemble is not None:
            self._ensemble(ctx)
            return
        try:
            estimator = build_estimator(
                model.type,
                model.params,
                scale=model.scale,
                random_state=ctx.spec.split.random_state,
                image=ctx.spec.image_format,
            )
            features, target = ctx.split_xy(ctx.train)
            ctx.estimator = estimator.fit(features, target.to_numpy())
        except (TypeError, _sklearn_error()) as error:
            raise SpecError(f"model.params for {model.type}: {error}") from error

    @staticmethod
    def _ensemble(ctx: RunContext) -> None:
        features, target = ctx.split_xy(ctx.train)
        split = json.dumps(ctx.spec.split.model_dump(), sort_keys=True)
        outcome = train_ensemble(
            ctx.spec,
            ctx.registry,
            ctx.run_id,
            features,
            target.to_numpy(),
            data_id=f"{ctx.dataset_sha256}:{split}",
            cluster=ctx.cluster,
            listener=ctx.learner_listener,
        )
        ctx.estimator = outcome.estimator
        ctx.registry.runs.log_metrics(
            ctx.run_id,
            {
                "learners": outcome.fitted,
                "learners_failed": outcome.failed,
                "learners_resumed": outcome.resumed,
            },
        )
        ctx.tags["learners"] = str(outcome.fitted)


def score_metrics(
    spec: Spec, y_true: npt.NDArray[Any], scores: npt.NDArray[Any], labels: npt.NDArray[Any]
) -> dict[str, float]:
    """Compute the spec's metrics from class scores (or predictions) and labels."""
    results: dict[str, float] = {}
    for name in spec.metrics:
        metric = METRICS[name]
        if metric.uses == "label" or spec.task == "regression":
            value = metric.function(y_true, labels)
        elif scores.ndim == 2 and name == "roc_auc":
            value = metric.function(y_true, scores, multi_class="ovr")
        elif scores.ndim == 2 and name == "average_precision":
            from sklearn.preprocessing import label_binarize  # see _sklearn_error

            value = metric.function(label_binarize(y_true, classes=np.unique(y_true)), scores)
        else:
            value = metric.function(y_true, scores)
        results[name] = float(value)
    return results


class Evaluate:
    """Measure the fitted estimator on the held-out rows."""

    name: ClassVar[str] = "evaluate"

    def run(self, ctx: RunContext) -> None:
        """Compute and record the spec's metrics."""
        features, target = ctx.split_xy(ctx.test)
        y_true = target.to_numpy()
        if ctx.spec.task == "regression":
            predictions = ctx.estimator.predict(features)
            ctx.metrics = score_metrics(ctx.spec, y_true, predictions, predictions)
        else:
            if target.nunique() < 2:
                # Ranking metrics are undefined on one class; sklearn would return NaN.
                raise InvalidInputError(
                    f"the held-out split has only class {target.iloc[0]!r} of "
                    f"{target.name!r}; raise split.test_size or set split.stratify: true"
                )
            proba = ctx.estimator.predict_proba(features)
            scores = proba[:, 1] if proba.shape[1] == 2 else proba
            labels = ctx.estimator.classes_[np.argmax(proba, axis=1)]
            ctx.metrics = score_metrics(ctx.spec, y_true, scores, labels)
        ctx.registry.runs.log_metrics(ctx.run_id, ctx.metrics)


class Export:
    """Convert the estimator to a safe format and check the export predicts the same; with
    ``format: auto``, an ONNX export that does not is replaced by skops."""

    name: ClassVar[str] = "export"

    def run(self, ctx: RunContext) -> None:
        """Export, reload from bytes, and compare predictions on the held-out rows."""
        spec = ctx.spec
        exported = self._export(ctx, spec.model.format)
        problem = self._check(ctx, exported)
        if problem is not None and exported.format == "onnx" and spec.model.format == "auto":
            logger.warning("%s; exporting with skops instead", problem)
            key = "export_agreement" if spec.task == "regression" else "export_label_agreement"
            ctx.metrics["export_onnx_agreement"] = ctx.metrics[key]  # why it is skops
            exported = self._export(ctx, "skops")
            problem = self._check(ctx, exported)
        if problem is not None:
            hint = "set `model.format: skops` in the spec" if exported.format == "onnx" else ""
            raise InvalidInputError(f"{problem}; {hint or 'the model cannot be exported'}")
        ctx.exported = exported

    @staticmethod
    def _export(ctx: RunContext, format: Literal["auto", "onnx", "skops"]) -> ExportedModel:
        return export_model(
            ctx.estimator,
            feature_names=ctx.schema.feature_names,
            task=ctx.spec.estimator_task,
            format=format,
            columns=[column.model_dump() for column in ctx.schema.features],
            image=ctx.spec.image_format,
        )

    @staticmethod
    def _check(ctx: RunContext, exported: ExportedModel) -> str | None:
        """Record how the export agrees with the trained model; what is wrong, if it is."""
        spec = ctx.spec
        features, _ = ctx.split_xy(ctx.test)
        predictor = predictor_from_files(
            spec.model.name,
            0,
            exported.format,
            exported.files,
            exported.input_schema,
            exported.output_schema,
        )
        outputs = predictor.predict(features)
        if spec.task == "regression":
            expected = np.asarray(ctx.estimator.predict(features), dtype=np.float64)
            got = outputs["prediction"].astype(np.float64)
            diff = np.abs(got - expected)
            typical = float(np.mean(np.abs(expected))) if len(expected) else 0.0
            scale = np.maximum(np.abs(expected), typical)
            agreement = float(np.mean(diff <= EXPORT_RELATIVE_TOLERANCE * scale))
            ctx.metrics["export_max_abs_diff"] = float(np.max(diff, initial=0.0))
            ctx.metrics["export_agreement"] = agreement
            what = f"within {EXPORT_RELATIVE_TOLERANCE:.1%} of the trained model's prediction"
        else:
            expected_labels = ctx.estimator.predict(features)
            agreement = float(np.mean(outputs["label"] == expected_labels))
            ctx.metrics["export_label_agreement"] = agreement
            what = "the trained model's label"
        if agreement < MIN_EXPORT_AGREEMENT:
            return (
                f"the {exported.format} export gives {what} on only {agreement:.2%} of "
                f"held-out rows (at least {MIN_EXPORT_AGREEMENT:.1%} needed)"
            )
        return None


class Register:
    """Store the signed artifact, metrics and reference profile as a new version."""

    name: ClassVar[str] = "register"

    def run(self, ctx: RunContext) -> None:
        """Register the exported model."""
        assert ctx.exported is not None
        assert ctx.train is not None
        exported = ctx.exported
        # An image model's profile describes a sample of its pixels (data/images.py).
        profiled = ctx.schema if ctx.spec.image_format is None else profiled_schema(ctx.schema)
        ctx.version = ctx.registry.register_version(
            ctx.spec.model.name,
            files=exported.files,
            format=exported.format,
            input_schema=exported.input_schema,
            output_schema=exported.output_schema,
            metrics=ctx.metrics,
            reference_profile=profile_frame(ctx.train, profiled, scores=training_scores(ctx)),
            run_id=ctx.run_id,
            tags={**_tags(ctx.spec), **ctx.tags},
            description=ctx.spec.description or None,
        )


def training_scores(ctx: RunContext) -> npt.NDArray[np.float64]:
    """The trained model's score on each training row, profiled with the version so that
    the monitor can tell when live scores drift: P(positive class) for a binary classifier,
    the highest class probability for a multiclass one, the prediction for a regressor."""
    features, _ = ctx.split_xy(ctx.train)
    if ctx.spec.task == "regression":
        return np.asarray(ctx.estimator.predict(features), dtype=np.float64)
    proba = np.asarray(ctx.estimator.predict_proba(features), dtype=np.float64)
    return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)


def _tags(spec: Spec) -> dict[str, str]:
    """A version's tags: its spec and estimator, and the spec's monitoring and retrain
    rules if any."""
    tags = {"spec": spec.name, "estimator": spec.model.type}
    if spec.monitoring is not None:
        tags[MONITORING_TAG] = spec.monitoring.to_tag()
    if spec.retrain is not None:
        tags[RETRAIN_TAG] = spec.retrain.to_tag()
    return tags


class Promote:
    """Move the alias to the new version when the promotion rule allows it."""

    name: ClassVar[str] = "promote"

    def run(self, ctx: RunContext) -> None:
        """Apply the spec's promotion rule."""
        assert ctx.version is not None
        rule = ctx.spec.promotion
        decision = self.decide(ctx)
        if decision.promoted:
            ctx.registry.promote(ctx.version.ref, rule.alias, actor=f"run:{ctx.run_id}")
        ctx.promotion = decision

    @staticmethod
    def decide(ctx: RunContext) -> Promotion:
        """Compare the new version with the alias's current one."""
        assert ctx.version is not None
        rule = ctx.spec.promotion
        metric = ctx.spec.promotion_metric
        info = METRICS[metric]
        value = ctx.metrics.get(metric)
        if rule.require == "never":
            return Promotion(False, rule.alias, "the spec never promotes")
        if rule.min_value is not None and value is not None:
            worse = value < rule.min_value if info.greater_is_better else value > rule.min_value
            if worse:
                return Promotion(False, rule.alias, f"{metric} {value:.4f} misses {rule.min_value}")
        try:
            current = ctx.registry.get_version(ModelRef(ctx.version.name, None, rule.alias))
        except AliasNotFoundError:
            return Promotion(True, rule.alias, f"no version had alias {rule.alias!r}")
        if rule.require == "always":
            return Promotion(True, rule.alias, "the spec always promotes", current.version)
        old = current.metrics.get(metric)
        if value is None or old is None:
            return Promotion(
                True, rule.alias, f"v{current.version} has no {metric} to compare", current.version
            )
        better = value > old if info.greater_is_better else value < old
        comparison = f"{metric} {value:.4f} vs {old:.4f} of v{current.version}"
        return Promotion(better, rule.alias, comparison, current.version)


STAGES: tuple[type[Stage], ...] = (
    Ingest,
    Validate,
    Split,
    Train,
    Evaluate,
    Export,
    Register,
    Promote,
)

"""The batch-scoring step of ``shipyard demo``: a held-out file scored through a version's
verified artifact, measured against the file's labels; and two versions compared on it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from shipyard.cli.predict import score_file
from shipyard.inference.batch import DEFAULT_BATCH_ROWS
from shipyard.registry import ModelVersionInfo, Registry


@dataclass(frozen=True)
class LabelMetrics:
    """How scores and labels of one model agree with the true labels of a file.

    A figure the file cannot give (recall without a fraud row, precision without a flagged
    row, ranking metrics without both classes) is ``None``.
    """

    rows: int
    positives: int
    flagged: int
    precision: float | None
    recall: float | None
    average_precision: float | None
    roc_auc: float | None


@dataclass(frozen=True)
class HoldoutScoring:
    """A file scored by one version: which artifact, how fast, how well, and the scores."""

    version: ModelVersionInfo
    seconds: float
    metrics: LabelMetrics
    output: Path
    scored: pd.DataFrame = field(repr=False, compare=False)

    @property
    def rows_per_s(self) -> float:
        """Rows scored per second, reading, verifying and writing included."""
        return self.metrics.rows / self.seconds if self.seconds else 0.0


def label_metrics(truth: pd.Series, probability: pd.Series, label: pd.Series) -> LabelMetrics:
    """Precision and recall of ``label`` and the ranking quality of ``probability``."""
    # Imported here: scikit-learn takes a second, which commands other than the demo skip.
    from sklearn.metrics import average_precision_score, roc_auc_score

    actual = truth.to_numpy().astype(bool)
    flagged = label.to_numpy().astype(bool)
    hits = int(np.sum(actual & flagged))
    positives, n_flagged = int(actual.sum()), int(flagged.sum())
    both_classes = 0 < positives < len(actual)
    return LabelMetrics(
        rows=len(actual),
        positives=positives,
        flagged=n_flagged,
        precision=hits / n_flagged if n_flagged else None,
        recall=hits / positives if positives else None,
        average_precision=(
            float(average_precision_score(actual, probability)) if both_classes else None
        ),
        roc_auc=float(roc_auc_score(actual, probability)) if both_classes else None,
    )


def score_holdout(
    registry: Registry, ref: str, holdout: Path, output: Path, *, target: str
) -> HoldoutScoring:
    """Score ``holdout`` with the version ``ref`` names now, through its verified artifact."""
    # Pinned to one version, so the digest and key shown are those of the artifact scored.
    version = registry.get_version(ref)
    started = time.perf_counter()
    scored = score_file(registry, version.ref, holdout, output, batch_rows=DEFAULT_BATCH_ROWS)
    seconds = time.perf_counter() - started
    metrics = label_metrics(scored[target], scored["probability"], scored["label"])
    return HoldoutScoring(version, seconds, metrics, output, scored)


def shown(value: float | None) -> str:
    """A metric with four decimals, or why there is none."""
    return "n/a" if value is None else f"{value:.4f}"


def _share(count: int, rows: int) -> str:
    return f"{count:,} ({count / rows:.2%})" if rows else "0"


def batch_table(result: HoldoutScoring, ref: str) -> Table:
    """What the batch step did: the artifact it verified, its speed, its hits and misses."""
    version, metrics = result.version, result.metrics
    table = Table(title="batch scoring", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a digest is never cut
    table.add_row("model", f"{version.ref} ({ref})")
    table.add_row("artifact", f"{version.format}, manifest sha256:{version.manifest_digest}")
    table.add_row(
        "verified",
        f"manifest digest, Ed25519 signature (key {version.key_id}), every file's sha256",
    )
    table.add_row(
        "rows",
        f"{metrics.rows:,} held-out rows in {result.seconds:.2f} s "
        f"({result.rows_per_s:,.0f} rows/s, verifying, reading and writing included)",
    )
    table.add_row(
        "flagged as fraud",
        f"{_share(metrics.flagged, metrics.rows)}; the labels say "
        f"{_share(metrics.positives, metrics.rows)}",
    )
    table.add_row(
        "precision / recall",
        f"{shown(metrics.precision)} / {shown(metrics.recall)} "
        "(flagged rows that are fraud / fraud rows flagged)",
    )
    table.add_row(
        "average_precision / roc_auc",
        f"{shown(metrics.average_precision)} / {shown(metrics.roc_auc)} (of the probabilities)",
    )
    table.add_row("predictions", str(result.output))
    return table


def comparison_table(champion: HoldoutScoring, challenger: HoldoutScoring) -> Table:
    """Two versions side by side on the same held-out rows, and their incomparable test
    figures below."""
    rows, positives = champion.metrics.rows, champion.metrics.positives
    table = Table(
        title=f"champion vs challenger on the same {rows:,} held-out rows ({positives:,} fraud)",
        title_justify="left",
        caption="neither version trained on these rows. *Each on its own test split: other "
        "rows for each, so not comparable",
        caption_justify="left",
    )
    table.add_column()
    table.add_column(f"{champion.version.ref} (production)", justify="right")
    table.add_column(f"{challenger.version.ref} (challenger)", justify="right")
    for name in ("average_precision", "roc_auc", "precision", "recall"):
        table.add_row(
            name,
            shown(getattr(champion.metrics, name)),
            shown(getattr(challenger.metrics, name)),
        )
    table.add_row(
        "flagged as fraud", f"{champion.metrics.flagged:,}", f"{challenger.metrics.flagged:,}"
    )
    table.add_row(
        "[dim]test-split average_precision*[/]",
        f"[dim]{shown(champion.version.metrics.get('average_precision'))}[/]",
        f"[dim]{shown(challenger.version.metrics.get('average_precision'))}[/]",
    )
    return table

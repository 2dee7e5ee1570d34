from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.errors import InvalidInputError, SpecError
from shipyard.pipeline import Runner, parse_spec
from shipyard.registry import Registry
from shipyard.registry.tables import RunRow
from shipyard.settings import Settings

SPEC = """\
name: small-fraud
data:
  generate: {dataset: fraud, rows: 4000, seed: 11}
  target: Class
model:
  name: fraud
  type: HistGradientBoostingClassifier
  params: {max_iter: 40}
split: {test_size: 0.3}
metrics: [average_precision, roc_auc, f1]
promotion: {alias: production, metric: average_precision, require: beats_current}
"""


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    with Registry.open(settings) as opened:
        yield opened


def test_run_records_stages_metrics_lineage_and_promotes(registry: Registry) -> None:
    seen: list[tuple[str, str]] = []
    result = Runner(registry, listener=lambda n, s, _: seen.append((n, s))).run(
        parse_spec(SPEC), SPEC
    )
    names = ["ingest", "validate", "split", "train", "evaluate", "export", "register", "promote"]
    assert [t.name for t in result.stages] == names
    assert seen[:2] == [("ingest", "running"), ("ingest", "succeeded")]
    assert result.version.ref == "fraud:1"
    assert result.promotion.promoted
    assert 0.0 < result.metrics["average_precision"] <= 1.0
    assert result.metrics["export_label_agreement"] > 0.99
    run = registry.runs.get(result.run_id)
    assert run.status == "succeeded"
    assert [s.name for s in run.stages] == names
    assert all(s.status == "succeeded" and s.duration_s >= 0 for s in run.stages)
    assert run.dataset_sha256 == result.dataset_sha256
    assert len(run.dataset_sha256 or "") == 64
    assert run.params["model"] == "HistGradientBoostingClassifier"
    assert run.metrics["roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    version = registry.get_version("fraud@production")
    assert version.version == 1
    assert version.run_id == result.run_id
    profile = registry.get_profile("fraud:1")
    assert profile is not None
    assert set(profile["features"]) >= {"V1", "Amount"}
    assert profile["target"]["name"] == "Class"


def test_registered_profile_has_the_models_training_scores(registry: Registry) -> None:
    result = Runner(registry).run(parse_spec(SPEC), SPEC)
    profile = registry.get_profile(result.version.ref)
    assert profile is not None
    score = profile["score"]
    # P(fraud) on each of the 2,800 training rows, profiled like a numeric feature.
    assert score["count"] == profile["rows"] == 2800
    assert 0.0 <= score["min"] <= score["max"] <= 1.0
    assert score["quantiles"]["p50"] < 0.05 < score["max"]
    assert score["sketch"]["kind"] == "quantiles"


def test_a_worse_model_is_registered_but_not_promoted(registry: Registry) -> None:
    Runner(registry).run(parse_spec(SPEC), SPEC)
    weaker = SPEC.replace("max_iter: 40", "max_iter: 1, max_depth: 1")
    result = Runner(registry).run(parse_spec(weaker), weaker)
    assert result.version.version == 2
    assert not result.promotion.promoted
    assert "average_precision" in result.promotion.reason
    assert registry.get_version("fraud@production").version == 1


def test_a_failing_stage_fails_the_run_and_registers_nothing(registry: Registry) -> None:
    bad = SPEC.replace("max_iter: 40", "max_iter: -3")
    with pytest.raises(SpecError, match="max_iter"):
        Runner(registry).run(parse_spec(bad), bad)
    with registry.transaction() as session:
        (run_id,) = session.scalars(select(RunRow.id)).all()  # the one run, which failed
    run = registry.runs.get(run_id)
    assert run.status == "failed"
    assert run.stages[-1].name == "train"
    assert run.stages[-1].status == "failed"
    assert "max_iter" in (run.error or "")
    assert registry.list_models() == []


def test_single_class_target_is_refused(registry: Registry, tmp_path: Path) -> None:
    from shipyard.data import generate_fraud, write_table

    frame = generate_fraud(500, seed=1)
    frame["Class"] = 0
    write_table(frame, tmp_path / "one.csv")
    spec = parse_spec(SPEC).with_data_file(tmp_path / "one.csv")
    with pytest.raises(InvalidInputError, match="single class"):
        Runner(registry).run(spec, SPEC)


def test_a_held_out_split_with_one_class_is_refused(registry: Registry) -> None:
    unstratified = SPEC.replace(
        "split: {test_size: 0.3}", "split: {test_size: 0.01, stratify: false}"
    )
    unstratified = unstratified.replace("rows: 4000", "rows: 300")
    with pytest.raises(InvalidInputError, match="held-out split has only class"):
        Runner(registry).run(parse_spec(unstratified), unstratified)
    assert registry.list_models() == []


def test_the_spec_monitoring_section_is_stored_with_the_version(registry: Registry) -> None:
    from shipyard.monitoring.config import MonitoringSpec

    spec = parse_spec(SPEC + "monitoring: {windows: {rows: 300}, performance: {margin: 0.1}}\n")
    result = Runner(registry).run(spec, "")
    assert result.version is not None
    stored = MonitoringSpec.from_tags(registry.get_version(result.version.ref).tags)
    assert stored.windows.rows == 300
    assert stored.performance.margin == 0.1


def test_a_queued_run_is_carried_on_under_its_own_id(registry: Registry) -> None:
    queued = registry.runs.start("small-fraud", SPEC, {}, status="queued")
    result = Runner(registry).run(parse_spec(SPEC), SPEC, run_id=queued)
    assert result.run_id == queued
    assert registry.get_version("fraud:1").run_id == queued
    run = registry.runs.get(queued)
    assert run.status == "succeeded"
    assert len(run.stages) == 8

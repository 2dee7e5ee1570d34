"""POST /v1/models/{ref}:evaluate: a version scored on an uploaded labelled table with the
metrics of the spec that trained it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from shipyard.data import generate_fraud
from shipyard.examples import example_spec
from shipyard.inference import load_predictor
from shipyard.pipeline import load_spec
from shipyard.registry import Registry
from shipyard.server.app import create_app
from shipyard.settings import Settings

METRICS = ["average_precision", "roc_auc", "f1", "precision", "recall"]


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    """The rows fraud:1's run held out for its own evaluation (``trained_model_home`` trains
    on ``generate_fraud(6000, seed=3)``, split by the example spec)."""
    spec, _ = load_spec(example_spec("fraud"))
    frame = spec.data.table_schema().validate_frame(generate_fraud(6000, seed=3))
    _, test = train_test_split(
        frame,
        test_size=spec.split.test_size,
        random_state=spec.split.random_state,
        stratify=frame[spec.data.target],
    )
    return test.reset_index(drop=True)


def csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.to_parquet(out, index=False)
    return out.getvalue()


def test_the_metrics_are_those_its_run_recorded_on_the_same_held_out_rows(
    client: TestClient, held_out: pd.DataFrame, model_home: Path
) -> None:
    answer = client.post("/v1/models/fraud:evaluate", files={"file": ("held.csv", csv(held_out))})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"], body["spec"], body["target"]) == (
        "fraud",
        1,
        "fraud",
        "Class",
    )
    assert body["rows"] == len(held_out)
    assert list(body["metrics"]) == METRICS  # the spec's, in its order
    with Registry.open(Settings(home=model_home)) as registry:
        version = registry.get_version("fraud:1")
        predictor = load_predictor(registry.load_artifact("fraud:1"))
    assert body["run_id"] == version.run_id
    # The run measured the trained estimator; the server scores its signed ONNX export
    # (float32), so the figures agree to the export's precision.
    for name in METRICS:
        assert body["metrics"][name] == pytest.approx(version.metrics[name], abs=2e-3), name
        assert body["recorded_metrics"][name] == version.metrics[name]
    # And exactly what the served model computes on those rows.
    outputs = predictor.predict(held_out[predictor.input_schema["features"]].to_numpy("float32"))
    y = held_out["Class"].to_numpy()
    assert body["metrics"]["average_precision"] == average_precision_score(
        y, outputs["probability"]
    )
    assert body["metrics"]["roc_auc"] == roc_auc_score(y, outputs["probability"])
    assert body["metrics"]["f1"] == f1_score(y, outputs["label"], zero_division=0)


def test_a_raw_csv_or_parquet_body_gives_the_same_figures(
    client: TestClient, held_out: pd.DataFrame
) -> None:
    rows = held_out.head(600)
    by_form = client.post(
        "/v1/models/fraud@production:evaluate", files={"file": ("t.csv", csv(rows))}
    )
    raw_csv = client.post(
        "/v1/models/fraud:1:evaluate", content=csv(rows), headers={"Content-Type": "text/csv"}
    )
    raw_parquet = client.post(
        "/v1/models/fraud:evaluate",
        content=parquet(rows),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    for answer in (by_form, raw_csv, raw_parquet):
        assert answer.status_code == 200, answer.text
        assert answer.json()["metrics"] == by_form.json()["metrics"]
        assert answer.json()["rows"] == 600


@pytest.fixture
def small(model_home: Path) -> Iterator[TestClient]:
    """A server whose request bodies may hold at most 5,000 bytes."""
    with TestClient(create_app(Settings(home=model_home, max_body_bytes=5000))) as client:
        yield client


def _edited(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[pd.DataFrame], bytes]:
    return lambda frame: csv(edit(frame.head(300).copy()))


def _text_in(frame: pd.DataFrame) -> pd.DataFrame:
    frame["V3"] = frame["V3"].astype(object)
    frame.loc[41, "V3"] = "abc"
    return frame


def _unknown_class(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[5, "Class"] = 7
    return frame


def _missing_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame["Class"] = frame["Class"].astype(float)
    frame.loc[9, "Class"] = None
    return frame


BAD_FILES: list[tuple[str, Callable[[pd.DataFrame], bytes], str, int, str]] = [
    (
        "no target",
        _edited(lambda f: f.drop(columns="Class")),
        "t.csv",
        422,
        "t.csv has no column 'Class', the target the spec 'fraud' that trained fraud:1 names",
    ),
    (
        "no features",
        _edited(lambda f: f.drop(columns=["V1", "V2"])),
        "t.csv",
        422,
        "lacks 2 feature column(s) of fraud:1: V1, V2",
    ),
    (
        "text for a number",
        _edited(_text_in),
        "t.csv",
        422,
        "t.csv: feature 'V3' in row 42 (line 43) must be a number, got 'abc'",
    ),
    ("one class", _edited(lambda f: f[f["Class"] == 0]), "t.csv", 422, "holds only class 0"),
    ("no class", _edited(_unknown_class), "t.csv", 422, "holds 7, which is no class of fraud:1"),
    (
        "a missing label",
        _edited(_missing_label),
        "t.csv",
        422,
        "the target 'Class' is empty in row 10",
    ),
    ("empty", lambda f: b"", "t.csv", 400, "t.csv is empty"),
    ("one row", _edited(lambda f: f.head(1)), "t.csv", 400, "an evaluation needs at least 2"),
    ("not CSV", lambda f: b'\x00\x01"\n\xff', "t.csv", 400, "cannot read t.csv as CSV"),
    ("JSON", lambda f: b"[]", "t.json", 415, "t.json (application/json) is not a CSV or Parquet"),
]


@pytest.mark.parametrize(
    ("content", "filename", "status", "message"),
    [pytest.param(c, f, s, m, id=name) for name, c, f, s, m in BAD_FILES],
)
def test_bad_tables_are_refused_naming_what_is_wrong(
    client: TestClient,
    held_out: pd.DataFrame,
    content: Callable[[pd.DataFrame], bytes],
    filename: str,
    status: int,
    message: str,
) -> None:
    files = {"file": (filename, content(held_out))}
    answer = client.post("/v1/models/fraud:evaluate", files=files)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_unknown_models_wrong_bodies_and_big_ones_are_refused(
    client: TestClient, small: TestClient, held_out: pd.DataFrame
) -> None:
    table = {"file": ("t.csv", csv(held_out.head(50)))}
    for ref, text in [
        ("nope", "no model named 'nope'"),
        ("fraud:9", "has no version 9"),
        ("fraud@staging", "has alias 'staging'"),
    ]:
        answer = client.post(f"/v1/models/{ref}:evaluate", files=table)
        assert answer.status_code == 404, answer.text
        assert text in answer.json()["error"]
    answer = client.post("/v1/models/fraud:evaluate", json={"rows": []})
    assert answer.status_code == 415
    assert "send multipart/form-data with a field 'file'" in answer.json()["error"]
    answer = client.post("/v1/models/fraud:evaluate", files={"table": ("t.csv", b"a\n1\n")})
    assert answer.status_code == 400
    assert "no multipart field 'file' (fields sent: 'table')" in answer.json()["error"]
    answer = small.post("/v1/models/fraud:evaluate", files={"file": ("t.csv", csv(held_out))})
    assert answer.status_code == 413
    assert "exceeds the limit of 5000" in answer.json()["error"]


def test_a_version_registered_without_a_run_has_no_spec_to_evaluate_by(
    model_home: Path, register_v2: Callable[[Path], None], held_out: pd.DataFrame
) -> None:
    register_v2(model_home)  # fraud:2, registered directly: no run
    with TestClient(create_app(Settings(home=model_home))) as client:
        answer = client.post(
            "/v1/models/fraud:2:evaluate", files={"file": ("t.csv", csv(held_out))}
        )
    assert answer.status_code == 409
    assert "fraud:2 was registered without a pipeline run" in answer.json()["error"]


def test_evaluation_needs_a_token_when_inference_is_protected(
    model_home: Path, held_out: pd.DataFrame
) -> None:
    settings = Settings(home=model_home, protect_inference=True)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/models/fraud:evaluate", files={"file": ("t.csv", csv(held_out))})
    assert answer.status_code == 401

"""A real ``shipyard serve`` with a version in shadow: production answers every request, the
shadow scores the same rows off the response path, and the log holds both under one id."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from shipyard.data import generate_fraud
from shipyard.monitoring.log import open_prediction_log
from shipyard.registry import SHADOW_ALIAS, Registry
from shipyard.server.process import ServerProcess
from shipyard.settings import Settings

from .conftest import FEATURES

BOUND_S = 30  # bounds the wait for the log; nothing is timed


def test_production_answers_while_the_shadow_scores_the_same_rows(
    model_home: Path, tmp_path: Path, register_v2: Callable[[Path], None]
) -> None:
    register_v2(model_home)
    settings = Settings(home=model_home)
    with Registry.open(settings) as registry:
        registry.promote("fraud:2", SHADOW_ALIAS, actor="test")
    rows = generate_fraud(40, seed=5)[FEATURES].to_dict(orient="records")
    sent = [f"req-{i}" for i in range(len(rows))]
    log = open_prediction_log(settings)
    assert log is not None
    with ServerProcess(settings, log=tmp_path / "server.log") as server, httpx.Client() as http:
        versions = []
        for i in range(0, len(rows), 4):  # requests of 4 rows, each with its ids
            instances = [{"id": sent[j], **rows[j]} for j in range(i, i + 4)]
            answer = http.post(
                f"{server.url}/v1/models/fraud:predict", json={"instances": instances}
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            versions.append(body["version"])
            assert [p["id"] for p in body["predictions"]] == sent[i : i + 4]
        assert versions == [1] * 10  # the shadow never answers
        deadline = time.monotonic() + BOUND_S
        while True:
            tables = log.scan("fraud")
            logged = {v: sorted(t.column("id").to_pylist()) for v, t in tables.items()}
            if logged.get(1) == sorted(sent) and logged.get(2) == sorted(sent):
                break
            assert time.monotonic() < deadline, f"the log holds {logged}"
            time.sleep(0.2)
    scores = {
        v: dict(zip(t.column("id").to_pylist(), t.column("score").to_pylist(), strict=True))
        for v, t in tables.items()
    }
    one = np.array([scores[1][i] for i in sent])
    two = np.array([scores[2][i] for i in sent])
    assert not np.allclose(one, two)  # two models' own scores, not a copy
    log.close()

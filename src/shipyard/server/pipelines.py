"""Training over HTTP: ``POST /v1/pipelines/{name}/runs`` (operator) queues a run and starts
its training in a child process — or, with ``"submit": true`` (or the ``pipeline_submit``
setting), puts it on the broker for the stage workers (``shipyard pipeline worker``) —
``GET /v1/pipelines/runs/{id}`` follows it, ``GET /v1/pipelines/{name}/runs`` lists a
pipeline's runs.

A run is started from the spec and the table in the request (multipart fields ``spec`` and
``data``), from a spec that generates its data (``{"spec": "..."}``), or — with an empty
body — again from the spec and data of the pipeline's last run. Everything is checked before
the 202: a bad spec or table queues nothing and stores nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from shipyard.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedMediaTypeError,
)
from shipyard.messaging import open_broker
from shipyard.messaging.embedded import EmbeddedNats
from shipyard.pipeline.events import submit_run
from shipyard.pipeline.spec import Spec, parse_spec
from shipyard.pipeline.training import (
    UNFINISHED,
    TrainingProcesses,
    learners,
    queue_run,
    settle,
)
from shipyard.registry import ModelVersionInfo, Principal, Registry, Role, RunInfo
from shipyard.registry.reference import check_name
from shipyard.server.auth import inference, require
from shipyard.server.responses import JSON, ErrorBody, json_response, parse_json
from shipyard.server.state import ServerState, state_of
from shipyard.server.uploads import MULTIPART, Upload, form_of, form_table, form_text, media_type

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], dependencies=[Depends(inference)])
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
FIELDS = frozenset({"spec", "data", "submit"})
SUBMIT_VALUES = {"true": True, "false": False}
#: Longest a ``GET …/runs/{id}?wait=`` holds the request for the run to finish.
MAX_WAIT_S = 300.0
WAIT_POLL_S = 0.25

RUN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "The spec and its table, a spec that generates its data, or nothing: "
        "again from the spec and data of the pipeline's last run",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "string", "description": "The pipeline's YAML spec"},
                        "data": {
                            "type": "string",
                            "format": "binary",
                            "description": "The table (CSV or Parquet); without it, the "
                            "data of the last run (with a spec that names no data source)",
                        },
                        "submit": {
                            "type": "string",
                            "enum": ["true", "false"],
                            "description": "true: run on the stage workers",
                        },
                    },
                }
            },
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {"type": "string"},
                        "submit": {
                            "type": "boolean",
                            "description": "Run on the stage workers (shipyard pipeline "
                            "worker) instead of a child process; default the "
                            "pipeline_submit setting",
                        },
                    },
                },
                "example": {"spec": "name: fraud\ndata: {generate: {dataset: fraud, rows: 5000}…"},
            },
        },
    }
}


@dataclass(frozen=True)
class RunRequest:
    """What a ``POST …/runs`` asked for, before it is checked."""

    spec_text: str | None
    upload: Upload | None
    submit: bool | None = None


def trainings_of(request: Request) -> TrainingProcesses:
    """The training children this server process started (made on first use)."""
    app_state = request.app.state
    trainings: TrainingProcesses | None = getattr(app_state, "trainings", None)
    if trainings is None:
        trainings = TrainingProcesses(state_of(request).settings)
        app_state.trainings = trainings
    return trainings


@router.post(
    "/{name}/runs",
    status_code=202,
    openapi_extra=RUN_BODY,
    responses={
        202: {
            "description": "Queued; its training runs in a child process or on the stage "
            "workers (`Location`)"
        },
        400: {"model": ErrorBody, "description": "A bad spec, table or body"},
        404: {"model": ErrorBody, "description": "An empty body, and the pipeline never ran"},
        409: {"model": ErrorBody, "description": "The last run's data file is gone"},
        413: {"model": ErrorBody, "description": "Body over SHIPYARD_MAX_BODY_BYTES"},
        415: {
            "model": ErrorBody,
            "description": "Not multipart, JSON or empty; a table that is not CSV or Parquet",
        },
        422: {"model": ErrorBody, "description": "The table does not match the spec's schema"},
    },
)
async def start_run(request: Request, name: str, principal: Operator) -> Response:
    """Train pipeline ``name`` in a child process; answers 202 with the run's id at once.

    Send the spec and its table as multipart fields ``spec`` and ``data`` (a CSV or Parquet
    file; ``data`` alone: the last run's spec on this table), or ``{"spec": "..."}`` for a
    spec that generates its data, or nothing: again from the last run's spec and data.
    ``submit`` (a JSON field or a form field ``true``) runs it on the stage workers.
    Needs the operator role."""
    check_name(name, "pipeline name")
    asked = await _run_request(request)
    state = state_of(request)
    trainings = trainings_of(request)
    await asyncio.to_thread(_settle_ended, state, trainings)
    submit = state.settings.pipeline_submit if asked.submit is None else asked.submit
    if submit:
        spec, text, _ = await asyncio.to_thread(_checked, state, name, asked)
        run_id = await _submit(state, spec, text)
    else:
        run_id = await asyncio.to_thread(_queue, state, trainings, name, asked)
    location = f"{router.prefix}/runs/{run_id}"
    response = json_response(
        {
            "id": run_id,
            "pipeline": name,
            "status": "queued",
            "run": location,
            "runs_on": "stage workers" if submit else "a child process",
        },
        202,
    )
    response.headers["Location"] = location
    return response


@router.get(
    "/runs/{run_id}",
    responses={404: {"model": ErrorBody, "description": "No such run"}},
)
async def show_run(
    request: Request,
    run_id: str,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for the run to finish"),
    ] = 0,
) -> Response:
    """A run: status, error, stages with timings, metrics, learners done and failed, the
    version it registered and its data. ``?wait=S`` answers once the run has finished or
    ``S`` seconds have passed."""
    state = state_of(request)
    trainings = trainings_of(request)
    deadline = time.monotonic() + wait
    polls = int(wait / WAIT_POLL_S) + 1
    for _ in range(polls):
        await asyncio.to_thread(_settle_ended, state, trainings)
        run = await asyncio.to_thread(_settled, state, run_id)
        if run.status not in UNFINISHED or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(WAIT_POLL_S, max(deadline - time.monotonic(), 0)))
    versions = await asyncio.to_thread(state.registry.versions_of_runs, [run.id])
    return json_response(run_body(run, versions.get(run.id)))


@router.get("/{name}/runs")
async def list_runs(
    request: Request,
    name: str,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most runs to list")] = 50,
) -> Response:
    """The pipeline's runs, newest first (an empty list if it never ran)."""
    check_name(name, "pipeline name")
    state = state_of(request)
    await asyncio.to_thread(_settle_ended, state, trainings_of(request))

    def read() -> list[dict[str, Any]]:
        runs = [
            settle(state.registry, state.settings.home, run)
            for run in state.registry.runs.recent(name, limit=limit)
        ]
        versions = state.registry.versions_of_runs([run.id for run in runs])
        return [run_body(run, versions.get(run.id), stages=False) for run in runs]

    return json_response({"pipeline": name, "runs": await asyncio.to_thread(read)})


def run_body(
    run: RunInfo, version: ModelVersionInfo | None, *, stages: bool = True
) -> dict[str, Any]:
    """A run as JSON: its state, timings, metrics (and ``learners`` of an ensemble), the
    version it registered and where its data came from."""
    finished = run.finished_at
    body: dict[str, Any] = {
        "id": run.id,
        "pipeline": run.spec_name,
        "status": run.status,
        "error": run.error,
        "started_at": run.started_at.isoformat(),
        "finished_at": finished.isoformat() if finished is not None else None,
        "duration_s": (finished - run.started_at).total_seconds() if finished else None,
    }
    if stages:
        body["stages"] = [
            {
                "name": stage.name,
                "status": stage.status,
                "started_at": stage.started_at.isoformat(),
                "duration_s": stage.duration_s,
                "error": stage.error,
            }
            for stage in run.stages
        ]
    body["metrics"] = run.metrics
    counted = learners(run)
    if counted is not None:
        body["learners"] = counted
    body["version"] = _version(version) if version is not None else None
    body["dataset_sha256"] = run.dataset_sha256
    body["data"] = run.params.get("data")
    return body


def _version(info: ModelVersionInfo) -> dict[str, Any]:
    data = asdict(info)
    data["created_at"] = info.created_at.isoformat()
    data["ref"] = info.ref
    return data


async def _run_request(request: Request) -> RunRequest:
    """The spec text and table a ``POST …/runs`` sent (both None: an empty body)."""
    media = media_type(request.headers.get("content-type"))
    if media == MULTIPART:
        async with form_of(request) as form:
            extra = sorted(set(form.keys()) - FIELDS)
            if extra:
                raise InvalidInputError(
                    f"unknown multipart fields {', '.join(extra)}; send `spec` and/or `data`"
                )
            asked = RunRequest(
                await form_text(form, "spec"),
                await form_table(form, "data"),
                _submit_field(await form_text(form, "submit")),
            )
        if asked.spec_text is None and asked.upload is None:
            raise InvalidInputError(
                "the form has neither `spec` nor `data`; send -F spec=@pipeline.yaml "
                "-F data=@table.csv, or an empty body to train again as last time"
            )
        return asked
    body = await request.body()
    if not body:
        return RunRequest(None, None)
    if media != JSON:
        raise UnsupportedMediaTypeError(
            f"content type {media or '(none)'!r} is not accepted here; send {MULTIPART} "
            f'(fields spec, data), {JSON} ({{"spec": "..."}}) or an empty body'
        )
    payload = parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("spec"), str):
        raise InvalidInputError('the JSON body is {"spec": "<the spec as YAML text>"}')
    extra = sorted(payload.keys() - {"spec", "submit"})
    if extra:
        raise InvalidInputError(
            f'unknown fields {", ".join(extra)}; the JSON body is {{"spec": "...", '
            '"submit": false}} (send a table as multipart field `data`)'
        )
    submit = payload.get("submit")
    if submit is not None and not isinstance(submit, bool):
        raise InvalidInputError(f'"submit" is true or false, not {submit!r}')
    return RunRequest(payload["spec"], None, submit)


def _submit_field(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.strip().lower() not in SUBMIT_VALUES:
        raise InvalidInputError(f"form field `submit` is true or false, not {value!r}")
    return SUBMIT_VALUES[value.strip().lower()]


async def _submit(state: ServerState, spec: Spec, text: str) -> str:
    """Queue the run on the broker for the stage workers (the embedded NATS server of the
    home when no broker URL is set)."""
    settings = state.settings
    url, embedded = settings.broker_url, None
    if not url:
        embedded = EmbeddedNats(settings.home)
        url = await asyncio.to_thread(embedded.start)
    broker = open_broker(url, redelivery_ms=settings.stage_redelivery_ms)
    try:
        return await submit_run(
            state.registry, broker, spec, text, prefix=settings.stage_queue_prefix
        )
    finally:
        await broker.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _queue(state: ServerState, trainings: TrainingProcesses, name: str, asked: RunRequest) -> str:
    """Check the request, keep its table, queue the run and start its training."""
    spec, text, data = _checked(state, name, asked)
    run_id = queue_run(state.registry, spec, text)
    trainings.start(state.registry, run_id, text, data)
    return run_id


def _checked(state: ServerState, name: str, asked: RunRequest) -> tuple[Spec, str, Path | None]:
    """The request's spec, its text and its data file (an upload kept under the home)."""
    registry, home = state.registry, state.settings.home
    uploads = (home / "uploads").absolute()
    text = asked.spec_text
    data: Path | None = None
    if text is None:
        text, data = _last_run(registry, name, again=asked.upload is None)
    if asked.upload is not None:
        data = asked.upload.path_in(uploads)
    spec = parse_spec(text, source="the spec", data_file=data)
    if spec.name != name:
        raise InvalidInputError(
            f"the spec is named {spec.name!r}, not {name!r}: POST it to "
            f"/v1/pipelines/{spec.name}/runs, or rename it"
        )
    if data is None and spec.data.path is not None:
        raise InvalidInputError(
            f"the spec reads data.path {str(spec.data.path)!r}, a file the server will not "
            "open for a request; upload the table as multipart field `data` "
            "(-F data=@table.csv)"
        )
    if asked.upload is not None:
        _check_table(spec, asked.upload)
        asked.upload.store(uploads)
    return spec, text, data


def _last_run(registry: Registry, name: str, *, again: bool) -> tuple[str, Path | None]:
    """The spec text of the pipeline's last run and, if ``again``, its data file (None:
    the spec generates its data)."""
    last = registry.runs.recent(name, limit=1)
    if not last:
        raise NotFoundError(
            f"pipeline {name!r} has never run here, so there is no last run to repeat; send "
            "its spec (and table): -F spec=@pipeline.yaml -F data=@table.csv"
        )
    run = last[0]
    text = registry.runs.spec_text(run.id)
    if not again:
        return text, None
    source = run.params.get("data")
    if isinstance(source, dict) and "generate" in source:
        return text, None
    path = source.get("path") if isinstance(source, dict) else None
    if not isinstance(path, str):
        raise ConflictError(
            f"the last run of {name!r} ({run.id}) records no data source; send the table "
            "as multipart field `data`"
        )
    if not Path(path).is_file():
        raise ConflictError(
            f"the data of the last run of {name!r} ({run.id}), {path}, is gone; send the "
            "table as multipart field `data` (-F data=@table.csv)"
        )
    return text, Path(path)


def _check_table(spec: Spec, upload: Upload) -> None:
    """The uploaded table parses and holds the spec's columns and target (400, 422)."""
    spec.data.table_schema().validate_frame(upload.read(), require_target=True)


def _settled(state: ServerState, run_id: str) -> RunInfo:
    return settle(state.registry, state.settings.home, state.registry.runs.get(run_id))


def _settle_ended(state: ServerState, trainings: TrainingProcesses) -> None:
    """Reap this process's children that ended and fail their runs if they left them
    unfinished."""
    for run_id in trainings.reap():
        settle(state.registry, state.settings.home, state.registry.runs.get(run_id))

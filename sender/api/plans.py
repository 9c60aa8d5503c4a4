"""Plan administration for the operator (API key): register, upload, complete, S3 load, stop.

The operator never opens the database; these endpoints are its only way to
change the data plane. Every call is idempotent by plan id (the EmailPlan's
``metadata.uid``), so a reconciler may repeat any of them after a crash.
Request and answer bodies are the models of ``emailplan.contract.plans``;
suspension travels only in the plan's ``suspended`` field. All ledger rules
(counters, suppressions, dedup, when a plan is done) live in the ``emailplan.sender.store`` ledger modules.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from emailplan.contract.health import Dependency
from emailplan.contract.plans import (
    LoadFailure,
    LoadFailureReason,
    LoadJob,
    LoadResult,
    LoadSourceKind,
    LoadState,
    PlanPayload,
    PlanState,
    PlanView,
    S3Source,
)
from emailplan.contract.recipients import ListError, ListFormat
from emailplan.sender import loader
from emailplan.sender.api import jsonbody, metrics, s3load
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import ApiState, state_of
from emailplan.sender.api.stats import plan_id_of
from emailplan.sender.api.uploads import TooLarge, read_rows
from emailplan.sender.rendering import RenderError, compile_campaign
from emailplan.sender.store import loading, plans

log = logging.getLogger(__name__)

MAX_PLAN_BYTES = 5 * 1024 * 1024
FORMATS = {
    **dict.fromkeys(
        ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"),
        ListFormat.NDJSON,
    ),
    **dict.fromkeys(("text/csv", "application/csv"), ListFormat.CSV),
}

M = TypeVar("M", bound=BaseModel)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


async def _view(state: ApiState, plan_id: uuid.UUID) -> PlanView:
    view = await plans.describe_plan(state.engine, plan_id)
    state.health.record(Dependency.DATABASE, None)  # it answered just now
    if view is None:
        raise ApiError(404, "unknown plan", "planId")
    account = state.account.view if state.account is not None else None
    return view.model_copy(update={"dependencies": state.health.snapshot(), "account": account})


def _compiles(plan: PlanPayload, plan_id: uuid.UUID) -> dict[str, object]:
    """The plan's sending spec, compiled once here as the worker will (every variant too).

    A template that does not compile is the client's mistake, found now rather than by
    a worker that would refuse to send: 422 naming the field (``variants[1].html``).
    """
    spec = plan.sending_spec()
    try:
        compile_campaign(spec, str(plan_id))
    except RenderError as exc:
        raise ApiError(422, str(exc), exc.field) from exc
    return spec


async def put_plan(request: web.Request) -> web.Response:
    """Register or update the plan; a raised released share queues the rows it frees.

    The share is never lowered (rows once queued cannot be called back): the answer
    shows the share in force.
    """
    plan_id = plan_id_of(request)
    plan = await jsonbody.read_model(request, MAX_PLAN_BYTES, PlanPayload)
    spec = _compiles(plan, plan_id)
    state = state_of(request)
    registered, created = await plans.upsert_plan(
        state.engine,
        plan_id,
        name=plan.name,
        namespace=plan.namespace,
        spec=spec,
        rate_per_second=plan.rate_per_second,
        start_at=plan.start_at,
        suspended=plan.suspended,
        release_percent=plan.release_percent,
        open_zones=plan.open_zones,
    )
    if registered.recipients_complete and not PlanState(registered.state).finished:
        await loading.release_share(state.engine, plan_id, plan.release_percent, _queue(state))
    view = await _view(state, plan_id)
    log.info(
        "plan registered" if created else "plan updated", extra={"plan": str(plan_id), "state": view.state}
    )
    return _json(view, status=201 if created else 200)


async def get_plan(request: web.Request) -> web.Response:
    return _json(await _view(state_of(request), plan_id_of(request)))


def _closed(view: PlanView) -> None:
    if view.state.finished:
        raise ApiError(409, f"plan is {view.state} and takes no more recipients", "planId")


async def upload(request: web.Request) -> web.Response:
    """Append rows (answer: what this upload did), or with ``?complete=true`` load the whole list.

    The whole-list form is the operator's: rows of an unfinished earlier attempt
    are forgotten first, the list is completed, and the plan's load job records
    the outcome, so a retry after a crash never counts a row twice.
    """
    state = state_of(request)
    plan_id = plan_id_of(request)
    fmt = FORMATS.get(request.content_type.lower())
    if fmt is None:
        raise ApiError(415, "send application/x-ndjson or text/csv", "content-type")
    limit = state.settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"upload larger than {limit} bytes")
    whole = request.query.get("complete", "").lower() in ("1", "true", "yes")
    view = await _view(state, plan_id)
    _closed(view)
    if whole and view.recipients_loaded and view.load is not None:
        return _json(view.load)  # loaded already: a retry changes nothing
    if whole:
        queue = _queue(state)
        await loading.reset_recipients(state.engine, plan_id)
        await loading.save_load(state.engine, plan_id, LoadJob(state=LoadState.LOADING))
    account = await _account_list(state, plan_id, whole=whole)
    rows = read_rows(request.content.iter_chunked(256 * 1024), fmt, limit)
    try:
        result = await _ingest(state, plan_id, rows, account)
    except ApiError as exc:
        if whole and exc.status in (400, 413):  # the list itself is wrong: the job says why
            failure = LoadFailure(reason=LoadFailureReason.NOT_A_LIST, message=exc.message)
            await loading.save_load(state.engine, plan_id, LoadJob(state=LoadState.FAILED, failure=failure))
        raise
    if not whole:
        return _json(result)
    # Outcome first, then completion: whoever sees the list complete also sees its counts.
    job = LoadJob(**dict(result), state=LoadState.LOADED, source=LoadSourceKind.UPLOAD, attempts=1)
    job = await loading.save_load(state.engine, plan_id, job)
    await loading.complete_recipients(state.engine, plan_id, queue)
    return _json(job)


async def _account_list(state: ApiState, plan_id: uuid.UUID, *, whole: bool) -> dict[str, str] | None:
    """The SES account's suppression list, read before any row is stored (None: this API has no AWS).

    Unreadable: 503 naming SES, and for the operator's whole-list upload a failed,
    transient load job saying why, so the plan shows it and the operator retries.
    """
    if state.account is None:
        return None
    try:
        return await loader.account_suppressions(state.settings)
    except loader.AccountListUnavailableError as exc:
        log.warning("account suppression list unreadable", extra={"plan": str(plan_id), "error": str(exc)})
        if whole:
            failure = loader.failure(exc, "", "")
            await loading.save_load(state.engine, plan_id, LoadJob(state=LoadState.FAILED, failure=failure))
        raise ApiError(503, str(exc), dependency=Dependency.SES) from exc


async def _ingest(
    state: ApiState, plan_id: uuid.UUID, rows: object, account: dict[str, str] | None
) -> LoadResult:
    try:
        result = await loading.insert_recipients(
            state.engine,
            plan_id,
            rows,  # type: ignore[arg-type]
            account_suppressed=account,
        )
    except TooLarge as exc:
        raise ApiError(413, str(exc)) from exc
    except ListError as exc:
        raise ApiError(400, str(exc), exc.field or "body") from exc
    except plans.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    except plans.PlanClosedError as exc:
        raise ApiError(409, str(exc), "planId") from exc
    for label, n in (
        ("accepted", result.accepted),
        ("rejected", result.rejected),
        ("duplicate", result.duplicates),
        ("suppressed", result.suppressed),
    ):
        metrics.UPLOAD_ROWS.labels(result=label).inc(n)
    log.info(
        "recipients uploaded",
        extra={"plan": str(plan_id), **result.model_dump(include={"accepted", "rejected", "duplicates"})},
    )
    return result


def _queue(state: ApiState) -> plans.QueueSink:
    queue: plans.QueueSink | None = state.queue
    if queue is None:
        raise ApiError(503, "work queue not configured", dependency=Dependency.QUEUE)
    return queue


async def complete(request: web.Request) -> web.Response:
    state = state_of(request)
    plan_id = plan_id_of(request)
    await _view(state, plan_id)
    try:
        await loading.complete_recipients(state.engine, plan_id, _queue(state))
    except plans.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    return _json(await _view(state, plan_id))


async def load_s3(request: web.Request) -> web.Response:
    """Start (or restart, or leave running) the plan's S3 load job; the answer is the job."""
    state = state_of(request)
    plan_id = plan_id_of(request)
    source = await jsonbody.read_model(request, 64 * 1024, S3Source)
    view = await _view(state, plan_id)
    _closed(view)
    _queue(state)
    running = any(t.get_name() == s3load.task_name(plan_id) and not t.done() for t in state.background)
    job = view.load
    if s3load.needs_start(
        job, source, complete=view.recipients_loaded, running_here=running, now=datetime.now(UTC)
    ):
        job = await s3load.start(state, plan_id, source, job)
    assert job is not None
    return _json(job, status=202)


async def stop(request: web.Request) -> web.Response:
    state = state_of(request)
    plan_id = plan_id_of(request)
    try:
        await plans.stop_plan(state.engine, plan_id, state.queue)
    except plans.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    return _json(await _view(state, plan_id))

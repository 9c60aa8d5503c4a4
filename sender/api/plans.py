"""Plan administration for the operator (API key): register, upload, complete, S3, suspend/resume/stop.

The operator never opens the database; these endpoints are its only way to
change the data plane. Every call is idempotent by plan id (the EmailPlan's
``metadata.uid``), so a reconciler may repeat any of them after a crash.
All ledger rules (counters, suppressions, dedup) live in ``emailplan.sender.ledger``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emailplan.contract.addresses import Mailbox
from emailplan.contract.headers import HeaderValue
from emailplan.sender import ledger
from emailplan.sender.api import jsonbody, metrics, s3load
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import ApiState, state_of
from emailplan.sender.api.stats import plan_id_of
from emailplan.sender.api.uploads import csv_rows, ndjson_rows

log = logging.getLogger(__name__)

MAX_PLAN_BYTES = 5 * 1024 * 1024
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines")
CSV_TYPES = ("text/csv", "application/csv")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


M = TypeVar("M", bound=_Model)


class Tracking(_Model):
    opens: bool = True
    clicks: bool = False


class Unsubscribe(_Model):
    enabled: bool = True


class Ses(_Model):
    configuration_set: str | None = Field(None, alias="configurationSet", max_length=64)
    tags: dict[HeaderValue, HeaderValue] = Field(default_factory=dict)


class PlanIn(_Model):
    """Plan JSON of ``PUT /v1/plans/{planId}`` (camelCase like the CRD)."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field("", max_length=63)
    sender: Mailbox = Field(alias="from", min_length=3, max_length=998)
    reply_to: list[Mailbox] = Field(default_factory=list, alias="replyTo", max_length=50)
    subject: HeaderValue = Field(min_length=1, max_length=998)
    html: str | None = None
    text: str | None = None
    rate_per_second: float = Field(14.0, alias="ratePerSecond", gt=0, le=100_000)
    start_at: datetime | None = Field(None, alias="startAt")
    suspended: bool = False
    tracking: Tracking = Field(default_factory=Tracking)
    unsubscribe: Unsubscribe = Field(default_factory=Unsubscribe)
    ses: Ses = Field(default_factory=Ses)

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("startAt must carry a time zone (RFC 3339)")
        return value

    @model_validator(mode="after")
    def _body(self) -> PlanIn:
        if not (self.html or self.text):
            raise ValueError("html or text is required")
        return self

    def spec(self) -> dict[str, Any]:
        return {
            "from": self.sender,
            "replyTo": self.reply_to,
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "tracking": self.tracking.model_dump(),
            "unsubscribe": self.unsubscribe.model_dump(),
            "ses": {"configurationSet": self.ses.configuration_set, "tags": self.ses.tags},
        }


class S3Source(_Model):
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    format: Literal["csv", "jsonl", "ndjson"] = "jsonl"


async def _validated_body(request: web.Request, limit: int, model: type[M]) -> M:
    """Read a JSON object of at most ``limit`` bytes and validate it as ``model``; 400 names the field."""
    return await jsonbody.read_model(request, limit, model)


def view_json(view: ledger.PlanView) -> dict[str, Any]:
    """The plan view: spec fields, state, whether the list is complete, counts."""
    spec = view.spec
    return {
        "id": str(view.id),
        "name": view.name,
        "namespace": view.namespace,
        **{
            k: spec.get(k)
            for k in ("from", "replyTo", "subject", "html", "text", "tracking", "unsubscribe", "ses")
        },
        "ratePerSecond": view.rate_per_second,
        "startAt": view.start_at.isoformat() if view.start_at else None,
        "suspended": view.state == "suspended",
        "state": view.state,
        "recipientsLoaded": view.recipients_complete,
        "counts": view.counts,
        "createdAt": view.created_at.isoformat(),
        "updatedAt": view.updated_at.isoformat(),
    }


async def put_plan(request: web.Request) -> web.Response:
    plan_id = plan_id_of(request)
    plan = await _validated_body(request, MAX_PLAN_BYTES, PlanIn)
    view, created = await ledger.upsert_plan(
        state_of(request).engine,
        plan_id,
        name=plan.name,
        namespace=plan.namespace,
        spec=plan.spec(),
        rate_per_second=plan.rate_per_second,
        start_at=plan.start_at,
        suspended=plan.suspended,
    )
    log.info(
        "plan registered" if created else "plan updated", extra={"plan": str(plan_id), "state": view.state}
    )
    return web.json_response(view_json(view), status=201 if created else 200)


async def get_plan(request: web.Request) -> web.Response:
    view = await ledger.get_plan(state_of(request).engine, plan_id_of(request))
    if view is None:
        raise ApiError(404, "unknown plan", "planId")
    return web.json_response(view_json(view))


async def _existing(state: ApiState, plan_id: uuid.UUID) -> ledger.PlanView:
    view = await ledger.get_plan(state.engine, plan_id)
    if view is None:
        raise ApiError(404, "unknown plan", "planId")
    return view


async def upload(request: web.Request) -> web.Response:
    state = state_of(request)
    plan_id = plan_id_of(request)
    ctype = request.content_type.lower()
    if ctype not in NDJSON_TYPES + CSV_TYPES:
        raise ApiError(415, "send application/x-ndjson or text/csv", "content-type")
    limit = state.settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"upload larger than {limit} bytes")
    view = await _existing(state, plan_id)
    if view.state in ("stopped", "done"):
        raise ApiError(409, f"plan is {view.state} and takes no more recipients", "planId")
    chunks = request.content.iter_chunked(256 * 1024)
    rows = csv_rows(chunks, limit) if ctype in CSV_TYPES else ndjson_rows(chunks, limit)
    try:
        result = await ledger.insert_recipients(state.engine, plan_id, rows)
    except ledger.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    except ledger.PlanClosedError as exc:
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
        extra={
            "plan": str(plan_id),
            "accepted": result.accepted,
            "rejected": result.rejected,
            "duplicates": result.duplicates,
        },
    )
    return web.json_response(result.as_dict())


def _queue(state: ApiState) -> ledger.QueueSink:
    queue: ledger.QueueSink | None = state.queue
    if queue is None:
        raise ApiError(503, "work queue not configured")
    return queue


async def complete(request: web.Request) -> web.Response:
    state = state_of(request)
    plan_id = plan_id_of(request)
    await _existing(state, plan_id)
    try:
        enqueued = await ledger.complete_recipients(state.engine, plan_id, _queue(state))
    except ledger.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    view = await _existing(state, plan_id)
    return web.json_response({**view_json(view), "enqueued": enqueued})


async def load_s3(request: web.Request) -> web.Response:
    state = state_of(request)
    plan_id = plan_id_of(request)
    source = await _validated_body(request, 64 * 1024, S3Source)
    view = await _existing(state, plan_id)
    if view.state in ("stopped", "done"):
        raise ApiError(409, f"plan is {view.state} and takes no more recipients", "planId")
    _queue(state)
    task_name = f"s3-load-{plan_id}"
    running = any(t.get_name() == task_name and not t.done() for t in state.background)
    if not running:
        state.spawn(s3load.load(state, plan_id, source.bucket, source.key, source.format), task_name)
    return web.json_response(
        {
            "status": "loading",
            "planId": str(plan_id),
            "bucket": source.bucket,
            "key": source.key,
            "alreadyRunning": running,
        },
        status=202,
    )


async def suspend(request: web.Request) -> web.Response:
    return await _transition(request, ledger.suspend_plan)


async def resume(request: web.Request) -> web.Response:
    return await _transition(request, ledger.resume_plan)


async def stop(request: web.Request) -> web.Response:
    state = state_of(request)
    plan_id = plan_id_of(request)
    try:
        view = await ledger.stop_plan(state.engine, plan_id, state.queue)
    except ledger.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    return web.json_response(view_json(view))


async def _transition(request: web.Request, change: Any) -> web.Response:
    plan_id = plan_id_of(request)
    try:
        view = await change(state_of(request).engine, plan_id)
    except ledger.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    return web.json_response(view_json(view))


def add_routes(app: web.Application) -> None:
    app.router.add_put("/plans/{planId}", put_plan)
    app.router.add_get("/plans/{planId}", get_plan, allow_head=False)
    app.router.add_post("/plans/{planId}/recipients", upload)
    app.router.add_post("/plans/{planId}/recipients/complete", complete)
    app.router.add_post("/plans/{planId}/recipients/s3", load_s3)
    app.router.add_post("/plans/{planId}/suspend", suspend)
    app.router.add_post("/plans/{planId}/resume", resume)
    app.router.add_post("/plans/{planId}/stop", stop)

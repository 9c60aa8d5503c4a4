"""Every endpoint of the data-plane API, written once.

The API registers its handlers from :data:`ROUTES`, ``/v1/openapi.json`` is
generated from them, and the operator, the CLI, the mail renderer and the
development tools build their URLs with ``Route.url``. Paths, parameters and
bodies therefore cannot disagree between server, document and clients (the
route tests compare the running router with the document).
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from emailplan.contract.failures import DEFAULT_FAILURE_PAGE, MAX_FAILURE_PAGE, FailurePage
from emailplan.contract.followups import FromPlanSource, RetryRequest, RetryResult
from emailplan.contract.plans import (
    LoadJob,
    LoadResult,
    PlanCounts,
    PlanPayload,
    PlanView,
    S3Source,
    SuppressionImport,
    VariantCounts,
)
from emailplan.contract.route import JSON, Content, Method, Reply, Route, Tag, model_reply, raw_reply
from emailplan.contract.wire import Wire

MAX_HOURS = 168  # the widest window of the sent-in-last-N-hours count (a week)
DEFAULT_HOURS = 24


# --------------------------------------------------------------------------- bodies without a home elsewhere


class ErrorDetail(Wire):
    field: str | None = None
    message: str


class ErrorBody(Wire):
    """Every 4xx and 5xx answer: ``{"error": {"field"?, "message"}}``."""

    error: ErrorDetail


class Status(Wire):
    status: str


class SentCount(Wire):
    count: int
    hours: int


class SuppressionResult(Wire):
    received: int
    added: int


class Unsubscribed(Wire):
    unsubscribed: bool


class OneClick(Wire):
    """The RFC 8058 one-click body (form-encoded)."""

    list_unsubscribe: Literal["One-Click"] = Field(alias="List-Unsubscribe")


class CountsReply(PlanCounts):
    """The plan's counts with its id; ``variants`` only for a plan with A/B variants."""

    plan_id: str
    variants: list[VariantCounts] | None = Field(
        None, description="Per-variant counts over the A/B test cohort (only for a plan with variants)"
    )


# --------------------------------------------------------------------------- parameters


class PlanPath(Wire):
    plan_id: uuid.UUID = Field(description="The EmailPlan's metadata.uid")


class OpenQuery(Wire):
    request_id: str | None = Field(None, description="signed open token")


class ClickQuery(Wire):
    t: str
    u: str


class TokenQuery(Wire):
    t: str


class SentQuery(Wire):
    hours: int = Field(DEFAULT_HOURS, ge=1, le=MAX_HOURS)


class UploadQuery(Wire):
    complete: bool | None = None


class FailuresQuery(Wire):
    limit: int = Field(DEFAULT_FAILURE_PAGE, ge=1, le=MAX_FAILURE_PAGE, description="addresses per page")
    after: str | None = Field(
        None,
        pattern="^[0-9]{1,18}$",
        description="the next cursor of the page before (omit for the first page)",
    )


# --------------------------------------------------------------------------- answers shared by many routes


def _error(description: str) -> Reply:
    return model_reply(ErrorBody, description)


E400 = _error("Bad request (the field is named)")
KEY_MISSING = _error("Missing or wrong x-api-key")  # every keyed route's 401 (the document adds it)
E404 = _error("Unknown plan")
E409 = _error("Plan is stopped or done")
E413 = _error("Body too large")
E503 = _error("A dependency (database, SQS, S3) is unavailable")
PLAN = model_reply(PlanView, "The plan")
TEXT = {"type": "string"}
GIF = Reply(
    "Always a 1x1 transparent GIF, never cached",
    (Content("image/gif", schema={"type": "string", "format": "binary"}),),
    headers=("Cache-Control",),
)
_PAGE = (Content("text/html", schema=TEXT),)

# --------------------------------------------------------------------------- public: tracking, SNS, probes

OPEN_PIXEL = Route(
    Method.GET,
    "/v1/events/open",
    "openPixel",
    "Open-tracking pixel",
    Tag.TRACKING,
    {200: GIF},
    query=OpenQuery,
)
CLICK = Route(
    Method.GET,
    "/v1/events/click",
    "clickRedirect",
    "Click redirect (only to the URL the token was signed for)",
    Tag.TRACKING,
    {302: Reply("Redirect to the signed URL"), 400: E400},
    query=ClickQuery,
)
UNSUBSCRIBE_PAGE = Route(
    Method.GET,
    "/v1/unsubscribe",
    "unsubscribePage",
    "Unsubscribe confirmation page",
    Tag.TRACKING,
    {200: Reply("HTML page with a button that POSTs", _PAGE), 400: E400},
    query=TokenQuery,
)
UNSUBSCRIBE = Route(
    Method.POST,
    "/v1/unsubscribe",
    "unsubscribe",
    "RFC 8058 one-click unsubscribe",
    Tag.TRACKING,
    {
        200: Reply(
            "Unsubscribed (JSON, or an HTML page for browsers)",
            (Content(JSON, (Unsubscribed,)), *_PAGE),
        ),
        400: E400,
        404: _error("The message is no longer known"),
        413: E413,
        503: E503,
    },
    query=TokenQuery,
    body=model_reply(OneClick, "", media="application/x-www-form-urlencoded"),
)
SNS_RESULT = Route(
    Method.POST,
    "/v1/events/result",
    "snsResult",
    "SNS endpoint for SES events (signature-verified)",
    Tag.EVENTS,
    {
        200: model_reply(Status, "recorded, duplicate, confirmed, acknowledged or ignored"),
        400: E400,
        403: _error("Not provably from SNS, or not an allowed topic"),
        413: E413,
        502: _error("Subscription could not be confirmed (SNS retries)"),
        503: E503,
    },
    body=raw_reply("An SNS HTTP message: JSON sent as text/plain", "text/plain", TEXT),
)
HEALTHZ = Route(Method.GET, "/healthz", "healthz", "Liveness", Tag.OPS, {200: model_reply(Status, "Alive")})
READYZ = Route(
    Method.GET,
    "/readyz",
    "readyz",
    "Readiness (database reachable)",
    Tag.OPS,
    {200: model_reply(Status, "Ready"), 503: E503},
)
METRICS = Route(
    Method.GET,
    "/metrics",
    "metrics",
    "Prometheus metrics",
    Tag.OPS,
    {200: raw_reply("Prometheus text format", "text/plain", TEXT)},
)
OPENAPI = Route(
    Method.GET,
    "/v1/openapi.json",
    "openapi",
    "This document",
    Tag.OPS,
    {200: raw_reply("OpenAPI document", "application/json", {"type": "object"})},
)

# ----------------------------------------------------------------------- keyed: stats, suppressions, plans

PLAN_COUNTS = Route(
    Method.GET,
    "/v1/results/count/{planId}",
    "planCounts",
    "Counts of one plan",
    Tag.STATS,
    {200: model_reply(CountsReply, "Counters"), 400: E400, 404: E404},
    keyed=True,
    path_params=PlanPath,
)
SENT_COUNT = Route(
    Method.GET,
    "/v1/results/sent",
    "sentCount",
    "Messages sent in the last N hours (all plans)",
    Tag.STATS,
    {200: model_reply(SentCount, "Count"), 400: E400},
    keyed=True,
    query=SentQuery,
)
SUPPRESSIONS = Route(
    Method.POST,
    "/v1/suppressions",
    "addSuppressions",
    "Import addresses into the suppression list (never mailed again)",
    Tag.SUPPRESSIONS,
    {
        200: model_reply(SuppressionResult, "How many addresses were received and how many were new"),
        400: E400,
        413: E413,
    },
    keyed=True,
    body=model_reply(SuppressionImport, ""),
)
PUT_PLAN = Route(
    Method.PUT,
    "/v1/plans/{planId}",
    "putPlan",
    "Register or update a plan (idempotent)",
    Tag.PLANS,
    {
        200: model_reply(PlanView, "Updated"),
        201: model_reply(PlanView, "Created"),
        400: E400,
        413: E413,
        422: _error("A template (of the plan or of a variant) does not compile; the field is named"),
        503: E503,
    },
    keyed=True,
    path_params=PlanPath,
    body=model_reply(PlanPayload, ""),
)
GET_PLAN = Route(
    Method.GET,
    "/v1/plans/{planId}",
    "getPlan",
    "Plan view with counts and the recipient load job",
    Tag.PLANS,
    {200: PLAN, 400: E400, 404: E404},
    keyed=True,
    path_params=PlanPath,
)
UPLOAD_RECIPIENTS = Route(
    Method.POST,
    "/v1/plans/{planId}/recipients",
    "uploadRecipients",
    "Upload recipients (streamed NDJSON or CSV); with complete=true the whole list, as the load job",
    Tag.PLANS,
    {
        200: model_reply(
            LoadResult,
            "Rows accepted, refused and duplicate (by row); the load job when complete=true",
            LoadJob,
        ),
        400: E400,
        404: E404,
        409: E409,
        413: E413,
        415: _error("Unsupported content type"),
    },
    keyed=True,
    path_params=PlanPath,
    query=UploadQuery,
    body=Reply(
        "",
        (
            Content(
                "application/x-ndjson", schema=TEXT, example='{"email": "ann@example.com", "name": "Ann"}\n'
            ),
            Content("text/csv", schema=TEXT, example="email,name\nann@example.com,Ann\n"),
        ),
    ),
)
COMPLETE_RECIPIENTS = Route(
    Method.POST,
    "/v1/plans/{planId}/recipients/complete",
    "completeRecipients",
    "Mark the list complete and enqueue it (idempotent)",
    Tag.PLANS,
    {
        200: model_reply(PlanView, "The plan, with how many ids were enqueued"),
        400: E400,
        404: E404,
        503: E503,
    },
    keyed=True,
    path_params=PlanPath,
)
LOAD_S3 = Route(
    Method.POST,
    "/v1/plans/{planId}/recipients/s3",
    "loadRecipientsS3",
    "Load the list from S3 in the background, then complete it",
    Tag.PLANS,
    {
        202: model_reply(LoadJob, "The load job (started, restarted or running)"),
        400: E400,
        404: E404,
        409: E409,
        413: E413,
        503: E503,
    },
    keyed=True,
    path_params=PlanPath,
    body=model_reply(S3Source, ""),
)
LOAD_FROM_PLAN = Route(
    Method.POST,
    "/v1/plans/{planId}/recipients/from-plan",
    "loadRecipientsFromPlan",
    "Take a follow-up's audience from a finished plan's outcomes in the ledger and complete the list",
    Tag.PLANS,
    {
        200: model_reply(LoadJob, "The load job (the audience taken now, or before)"),
        400: E400,
        404: E404,
        409: _error("The follow-up is stopped, or the source plan is not finished"),
        413: E413,
        503: E503,
    },
    keyed=True,
    path_params=PlanPath,
    body=model_reply(FromPlanSource, ""),
)
RETRY_PLAN = Route(
    Method.POST,
    "/v1/plans/{planId}/retry",
    "retryPlan",
    "Queue a done plan's transient failures and soft bounces once more, once per generation",
    Tag.PLANS,
    {
        200: model_reply(RetryResult, "What the retry queued (0 for a generation done before)"),
        400: E400,
        404: E404,
        409: _error("The plan is still sending, or stopped"),
        413: E413,
        503: E503,
    },
    keyed=True,
    path_params=PlanPath,
    body=model_reply(RetryRequest, ""),
)
LIST_FAILURES = Route(
    Method.GET,
    "/v1/plans/{planId}/failures",
    "listFailures",
    "Failed and suppressed addresses of the plan with reason, detail and time, paged",
    Tag.PLANS,
    {
        200: model_reply(FailurePage, "One page; next is null on the last"),
        400: _error("Bad or unknown query parameter, or planId not a UUID (the parameter is named)"),
        404: E404,
    },
    keyed=True,
    path_params=PlanPath,
    query=FailuresQuery,
)
STOP_PLAN = Route(
    Method.POST,
    "/v1/plans/{planId}/stop",
    "stopPlan",
    "Stop for good; unsent messages become stopped",
    Tag.PLANS,
    {200: PLAN, 400: E400, 404: E404},
    keyed=True,
    path_params=PlanPath,
)

ROUTES: tuple[Route, ...] = (
    OPEN_PIXEL,
    CLICK,
    UNSUBSCRIBE_PAGE,
    UNSUBSCRIBE,
    SNS_RESULT,
    PLAN_COUNTS,
    SENT_COUNT,
    SUPPRESSIONS,
    PUT_PLAN,
    GET_PLAN,
    UPLOAD_RECIPIENTS,
    COMPLETE_RECIPIENTS,
    LOAD_S3,
    LOAD_FROM_PLAN,
    RETRY_PLAN,
    LIST_FAILURES,
    STOP_PLAN,
    HEALTHZ,
    READYZ,
    METRICS,
    OPENAPI,
)

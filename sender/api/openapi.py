"""The OpenAPI 3.1 document of the whole API, served at ``/v1/openapi.json``.

Paths are written as data so they are reviewed like code; the bodies that
cross the operator / data-plane line are generated from the models of
``emailplan.contract.plans``. Tests run schemathesis against it (every
documented answer, no 5xx for any generated request).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from emailplan import __version__
from emailplan.contract.addresses import ADDRESS_RULES
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

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


PLAN_ID = {
    "name": "planId",
    "in": "path",
    "required": True,
    "description": "The EmailPlan's metadata.uid",
    "schema": {"type": "string", "format": "uuid"},
}
KEYED: list[dict[str, list[str]]] = [{"apiKey": []}]
E400 = _err("Bad request (the field is named)")
E401 = _err("Missing or wrong x-api-key")
E404 = _err("Unknown plan")
E409 = _err("Plan is stopped or done")
E413 = _err("Body too large")
E503 = _err("A dependency (database, SQS, S3) is unavailable")


def _plan_op(summary: str, op_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "tags": ["plans"],
        "security": KEYED,
        "parameters": [PLAN_ID],
        "responses": {"200": _json(_ref("PlanView"), "The plan"), "400": E400, "401": E401, "404": E404},
    }
    if extra:
        op.update(extra)
    return op


# Bodies that cross the operator / data-plane line: schemas generated from the contract models,
# so the document cannot drift from what the API validates and answers.
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (PlanPayload, "validation"),
    (PlanView, "serialization"),
    (PlanCounts, "serialization"),
    (VariantCounts, "serialization"),
    (FailurePage, "serialization"),
    (LoadResult, "serialization"),
    (LoadJob, "serialization"),
    (S3Source, "validation"),
    (FromPlanSource, "validation"),
    (RetryRequest, "validation"),
    (RetryResult, "serialization"),
    (SuppressionImport, "validation"),
]
_, _GENERATED = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")

SCHEMAS: dict[str, Any] = {
    **_GENERATED["$defs"],
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
}

GIF_RESPONSE = {
    "description": "Always a 1x1 transparent GIF, never cached",
    "headers": {"Cache-Control": {"schema": {"type": "string"}}},
    "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
}

PATHS: dict[str, Any] = {
    "/v1/events/open": {
        "get": {
            "summary": "Open-tracking pixel",
            "operationId": "openPixel",
            "tags": ["tracking"],
            "parameters": [
                {
                    "name": "requestId",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "signed open token",
                }
            ],
            "responses": {"200": GIF_RESPONSE},
        }
    },
    "/v1/events/click": {
        "get": {
            "summary": "Click redirect (only to the URL the token was signed for)",
            "operationId": "clickRedirect",
            "tags": ["tracking"],
            "parameters": [
                {"name": "t", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "u", "in": "query", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {"302": {"description": "Redirect to the signed URL"}, "400": E400},
        }
    },
    "/v1/unsubscribe": {
        "get": {
            "summary": "Unsubscribe confirmation page",
            "operationId": "unsubscribePage",
            "tags": ["tracking"],
            "parameters": [{"name": "t", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "HTML page with a button that POSTs",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "400": E400,
            },
        },
        "post": {
            "summary": "RFC 8058 one-click unsubscribe",
            "operationId": "unsubscribe",
            "tags": ["tracking"],
            "parameters": [{"name": "t", "in": "query", "required": True, "schema": {"type": "string"}}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["List-Unsubscribe"],
                            "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Unsubscribed (JSON, or an HTML page for browsers)",
                    "content": {
                        JSON: {
                            "schema": {"type": "object", "properties": {"unsubscribed": {"type": "boolean"}}}
                        },
                        "text/html": {"schema": {"type": "string"}},
                    },
                },
                "400": E400,
                "404": _err("The message is no longer known"),
                "413": E413,
                "503": E503,
            },
        },
    },
    "/v1/events/result": {
        "post": {
            "summary": "SNS endpoint for SES events (signature-verified)",
            "operationId": "snsResult",
            "tags": ["events"],
            "requestBody": {
                "required": True,
                "description": "An SNS HTTP message: JSON sent as text/plain",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "responses": {
                "200": _json(_ref("Status"), "recorded, duplicate, confirmed, acknowledged or ignored"),
                "400": E400,
                "403": _err("Not provably from SNS, or not an allowed topic"),
                "413": E413,
                "502": _err("Subscription could not be confirmed (SNS retries)"),
                "503": E503,
            },
        }
    },
    "/v1/results/count/{planId}": {
        "get": {
            "summary": "Counts of one plan",
            "operationId": "planCounts",
            "tags": ["stats"],
            "security": KEYED,
            "parameters": [PLAN_ID],
            "responses": {
                "200": _json(
                    {
                        "allOf": [
                            _ref("PlanCounts"),
                            {
                                "type": "object",
                                "properties": {
                                    "planId": {"type": "string"},
                                    "variants": {
                                        "type": "array",
                                        "description": "Per-variant counts over the A/B test cohort "
                                        "(only for a plan with variants)",
                                        "items": _ref("VariantCounts"),
                                    },
                                },
                            },
                        ]
                    },
                    "Counters",
                ),
                "400": E400,
                "401": E401,
                "404": E404,
            },
        }
    },
    "/v1/results/sent": {
        "get": {
            "summary": "Messages sent in the last N hours (all plans)",
            "operationId": "sentCount",
            "tags": ["stats"],
            "security": KEYED,
            "parameters": [
                {
                    "name": "hours",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 168, "default": 24},
                }
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["count"],
                        "properties": {"count": {"type": "integer"}, "hours": {"type": "integer"}},
                    },
                    "Count",
                ),
                "400": E400,
                "401": E401,
            },
        }
    },
    "/v1/suppressions": {
        "post": {
            "summary": "Import addresses into the suppression list (never mailed again)",
            "operationId": "addSuppressions",
            "tags": ["suppressions"],
            "security": KEYED,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref("SuppressionImport")}},
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["received", "added"],
                        "properties": {"received": {"type": "integer"}, "added": {"type": "integer"}},
                    },
                    "How many addresses were received and how many were new",
                ),
                "400": E400,
                "401": E401,
                "413": E413,
            },
        }
    },
    "/v1/plans/{planId}": {
        "put": _plan_op(
            "Register or update a plan (idempotent)",
            "putPlan",
            {
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("PlanPayload")}}},
                "responses": {
                    "200": _json(_ref("PlanView"), "Updated"),
                    "201": _json(_ref("PlanView"), "Created"),
                    "400": E400,
                    "401": E401,
                    "413": E413,
                    "422": _err(
                        "A template (of the plan or of a variant) does not compile; the field is named"
                    ),
                    "503": E503,
                },
            },
        ),
        "get": _plan_op("Plan view with counts and the recipient load job", "getPlan"),
    },
    "/v1/plans/{planId}/recipients": {
        "post": _plan_op(
            "Upload recipients (streamed NDJSON or CSV); with complete=true the whole list, as the load job",
            "uploadRecipients",
            {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-ndjson": {
                            "schema": {"type": "string"},
                            "example": '{"email": "ann@example.com", "name": "Ann"}\n',
                        },
                        "text/csv": {
                            "schema": {"type": "string"},
                            "example": "email,name\nann@example.com,Ann\n",
                        },
                    },
                },
                "parameters": [
                    PLAN_ID,
                    {"name": "complete", "in": "query", "required": False, "schema": {"type": "boolean"}},
                ],
                "responses": {
                    "200": _json(
                        {"oneOf": [_ref("LoadResult"), _ref("LoadJob")]},
                        "Rows accepted, refused and duplicate (by row); the load job when complete=true",
                    ),
                    "400": E400,
                    "401": E401,
                    "404": E404,
                    "409": E409,
                    "413": E413,
                    "415": _err("Unsupported content type"),
                },
            },
        ),
    },
    "/v1/plans/{planId}/recipients/complete": {
        "post": _plan_op(
            "Mark the list complete and enqueue it (idempotent)",
            "completeRecipients",
            {
                "responses": {
                    "200": _json(_ref("PlanView"), "The plan, with how many ids were enqueued"),
                    "400": E400,
                    "401": E401,
                    "404": E404,
                    "503": E503,
                },
            },
        ),
    },
    "/v1/plans/{planId}/recipients/s3": {
        "post": _plan_op(
            "Load the list from S3 in the background, then complete it",
            "loadRecipientsS3",
            {
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("S3Source")}}},
                "responses": {
                    "202": _json(_ref("LoadJob"), "The load job (started, restarted or running)"),
                    "400": E400,
                    "401": E401,
                    "404": E404,
                    "409": E409,
                    "413": E413,
                    "503": E503,
                },
            },
        ),
    },
    "/v1/plans/{planId}/recipients/from-plan": {
        "post": _plan_op(
            "Take a follow-up's audience from a finished plan's outcomes in the ledger and complete the list",
            "loadRecipientsFromPlan",
            {
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("FromPlanSource")}}},
                "responses": {
                    "200": _json(_ref("LoadJob"), "The load job (the audience taken now, or before)"),
                    "400": E400,
                    "401": E401,
                    "404": E404,
                    "409": _err("The follow-up is stopped, or the source plan is not finished"),
                    "413": E413,
                    "503": E503,
                },
            },
        ),
    },
    "/v1/plans/{planId}/retry": {
        "post": _plan_op(
            "Queue a done plan's transient failures and soft bounces once more, once per generation",
            "retryPlan",
            {
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RetryRequest")}}},
                "responses": {
                    "200": _json(
                        _ref("RetryResult"), "What the retry queued (0 for a generation done before)"
                    ),
                    "400": E400,
                    "401": E401,
                    "404": E404,
                    "409": _err("The plan is still sending, or stopped"),
                    "413": E413,
                    "503": E503,
                },
            },
        ),
    },
    "/v1/plans/{planId}/failures": {
        "get": _plan_op(
            "Failed and suppressed addresses of the plan with reason, detail and time, paged",
            "listFailures",
            {
                "parameters": [
                    PLAN_ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "addresses per page",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_FAILURE_PAGE,
                            "default": DEFAULT_FAILURE_PAGE,
                        },
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "the next cursor of the page before (omit for the first page)",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    },
                ],
                "responses": {
                    "200": _json(_ref("FailurePage"), "One page; next is null on the last"),
                    "400": _err(
                        "Bad or unknown query parameter, or planId not a UUID (the parameter is named)"
                    ),
                    "401": E401,
                    "404": E404,
                },
            },
        )
    },
    "/v1/plans/{planId}/stop": {
        "post": _plan_op("Stop for good; unsent messages become stopped", "stopPlan")
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "operationId": "healthz",
            "tags": ["ops"],
            "responses": {"200": _json(_ref("Status"), "Alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness (database reachable)",
            "operationId": "readyz",
            "tags": ["ops"],
            "responses": {"200": _json(_ref("Status"), "Ready"), "503": E503},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "tags": ["ops"],
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "tags": ["ops"],
            "responses": {"200": _json({"type": "object"}, "OpenAPI document")},
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "emailplan events and stats API",
        "version": __version__,
        "description": "SES results through SNS, open/click tracking, one-click unsubscribe, statistics and "
        'plan administration for the emailplan operator. Errors are JSON: {"error": {"field", "message"}}. '
        + ADDRESS_RULES
        + " Counts: bounced is hard bounces (SES type Permanent), softBounced transient and"
        " undetermined ones; openedMachine is opens by privacy proxies and scanners (not in opened);"
        " sesRejected is SES Reject events (rows refused at load are the load job's rejected)."
        " A plan view's failures are its top reasons of failed and suppressed messages;"
        " /v1/plans/{planId}/failures lists the addresses.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
    },
}


async def serve(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", serve, allow_head=False)

"""The OpenAPI 3.1 document of the whole API, served at ``/v1/openapi.json``.

Hand-written as data so it is reviewed like code; tests run schemathesis
against it (every documented answer, no 5xx for any generated request).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emailplan import __version__
from emailplan.contract.addresses import ADDRESS_RULES

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


COUNT_NAMES = [
    "total",
    "created",
    "processing",
    "sent",
    "failed",
    "stopped",
    "suppressed",
    "delivered",
    "bounced",
    "softBounced",
    "complained",
    "opened",
    "opened_machine",
    "clicked",
    "unsubscribed",
    "rejected",
]

SCHEMAS: dict[str, Any] = {
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
    "Counts": {
        "type": "object",
        "required": COUNT_NAMES,
        "properties": {n: {"type": "integer", "minimum": 0} for n in COUNT_NAMES},
    },
    "PlanIn": {
        "type": "object",
        "required": ["name", "from", "subject"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "namespace": {"type": "string", "maxLength": 63},
            "from": {"type": "string", "minLength": 3, "maxLength": 998, "description": "RFC 5322 address"},
            "replyTo": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
            "subject": {"type": "string", "minLength": 1, "maxLength": 998},
            "html": {"type": ["string", "null"]},
            "text": {"type": ["string", "null"]},
            "ratePerSecond": {"type": "number", "exclusiveMinimum": 0, "maximum": 100000, "default": 14},
            "startAt": {"type": ["string", "null"], "format": "date-time"},
            "suspended": {"type": "boolean", "default": False},
            "tracking": {
                "type": "object",
                "properties": {"opens": {"type": "boolean"}, "clicks": {"type": "boolean"}},
            },
            "unsubscribe": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
            "ses": {
                "type": "object",
                "properties": {
                    "configurationSet": {"type": ["string", "null"], "maxLength": 64},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
        "description": "At least one of html and text is required.",
    },
    "PlanView": {
        "type": "object",
        "required": ["id", "name", "namespace", "state", "recipientsLoaded", "counts", "ratePerSecond"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "from": {"type": ["string", "null"]},
            "replyTo": {"type": ["array", "null"], "items": {"type": "string"}},
            "subject": {"type": ["string", "null"]},
            "html": {"type": ["string", "null"]},
            "text": {"type": ["string", "null"]},
            "tracking": {"type": ["object", "null"]},
            "unsubscribe": {"type": ["object", "null"]},
            "ses": {"type": ["object", "null"]},
            "ratePerSecond": {"type": "number"},
            "startAt": {"type": ["string", "null"]},
            "suspended": {"type": "boolean"},
            "state": {"type": "string", "enum": ["loading", "ready", "suspended", "stopped", "done"]},
            "recipientsLoaded": {"type": "boolean", "description": "the recipient list is complete"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "createdAt": {"type": "string"},
            "updatedAt": {"type": "string"},
            "enqueued": {"type": "integer"},
        },
    },
    "UploadResult": {
        "type": "object",
        "required": ["accepted", "rejected", "duplicates", "suppressed", "errors"],
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "suppressed": {"type": "integer"},
            "errors": {
                "type": "array",
                "description": "at most 1000, by row number (NDJSON line / CSV data row)",
                "items": {
                    "type": "object",
                    "required": ["row", "field", "message"],
                    "properties": {
                        "row": {"type": "integer"},
                        "field": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
    "S3Source": {
        "type": "object",
        "required": ["bucket", "key"],
        "properties": {
            "bucket": {"type": "string", "minLength": 3, "maxLength": 63},
            "key": {"type": "string", "minLength": 1, "maxLength": 1024},
            "format": {"type": "string", "enum": ["csv", "jsonl", "ndjson"], "default": "jsonl"},
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
                            _ref("Counts"),
                            {"type": "object", "properties": {"planId": {"type": "string"}}},
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
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["emails"],
                            "properties": {
                                "emails": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 10000,
                                    "items": {"type": "string", "format": "email"},
                                },
                                "reason": {
                                    "type": "string",
                                    "enum": ["manual", "bounce", "complaint", "unsubscribe"],
                                    "default": "manual",
                                },
                            },
                        }
                    }
                },
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
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("PlanIn")}}},
                "responses": {
                    "200": _json(_ref("PlanView"), "Updated"),
                    "201": _json(_ref("PlanView"), "Created"),
                    "400": E400,
                    "401": E401,
                    "413": E413,
                },
            },
        ),
        "get": _plan_op("Plan view with counts", "getPlan"),
    },
    "/v1/plans/{planId}/recipients": {
        "post": _plan_op(
            "Upload recipients (streamed NDJSON or CSV, idempotent)",
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
                "responses": {
                    "200": _json(_ref("UploadResult"), "Rows accepted, refused (by row), duplicate"),
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
                    "202": _json(_ref("Status"), "Loading started"),
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
    "/v1/plans/{planId}/suspend": {"post": _plan_op("Pause sending", "suspendPlan")},
    "/v1/plans/{planId}/resume": {"post": _plan_op("Resume sending", "resumePlan")},
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
        " undetermined ones.",
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

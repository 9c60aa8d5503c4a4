"""The OpenAPI 3.1 document of the whole API, served at ``/v1/openapi.json``.

Generated from the route table (``emailplan.contract.httpapi``): paths,
parameters, request and answer bodies all come from its routes and their
pydantic models, so the document cannot drift from what the API registers,
validates and answers. Tests run schemathesis against it (every documented
answer, no 5xx for any generated request) and compare it with the router.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from emailplan import __version__
from emailplan.contract.addresses import ADDRESS_RULES
from emailplan.contract.httpapi import KEY_MISSING, LIST_FAILURES, ROUTES
from emailplan.contract.route import Reply, Route

_REF = "#/components/schemas/{model}"
_Pair = tuple[type[BaseModel], JsonSchemaMode]


def _pairs() -> list[_Pair]:
    """Every model a route names, with its side: requests are validated, answers serialized."""
    seen: dict[_Pair, None] = {}
    for route in ROUTES:
        bodies: list[tuple[Reply, JsonSchemaMode]] = [(route.body, "validation")] if route.body else []
        bodies += [(reply, "serialization") for reply in (*route.responses.values(), KEY_MISSING)]
        for reply, mode in bodies:
            for content in reply.content:
                seen.update(dict.fromkeys((model, mode) for model in content.models))
    return list(seen)


_REFS, _GENERATED = models_json_schema(_pairs(), ref_template=_REF)


def _content(reply: Reply, mode: JsonSchemaMode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for content in reply.content:
        refs = [_REFS[(model, mode)] for model in content.models]
        schema = dict(content.schema) if not refs else refs[0] if len(refs) == 1 else {"oneOf": refs}
        out[content.media] = {"schema": schema, **({"example": content.example} if content.example else {})}
    return out


def _reply(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        out["headers"] = {name: {"schema": {"type": "string"}} for name in reply.headers}
    if reply.content:
        out["content"] = _content(reply, "serialization")
    return out


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    """One OpenAPI parameter per field of ``model`` (named by its wire alias)."""
    if model is None:
        return []
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    out: list[dict[str, Any]] = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        options = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
        if options:  # optional: the parameter is left out, never sent as null
            prop = {**options[0], **{k: v for k, v in prop.items() if k != "default" or v is not None}}
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        out.append({**param, **({"description": description} if description else {}), "schema": prop})
    return out


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "operationId": route.operation_id, "tags": [route.tag]}
    responses = dict(route.responses)
    if route.keyed:
        op["security"] = KEYED
        responses[401] = KEY_MISSING
    params = _parameters(route.path_params, "path") + _parameters(route.query, "query")
    if params:
        op["parameters"] = params
    if route.body is not None:
        body = {"required": True, "content": _content(route.body, "validation")}
        op["requestBody"] = {
            **({"description": route.body.description} if route.body.description else {}),
            **body,
        }
    op["responses"] = {str(code): _reply(responses[code]) for code in sorted(responses)}
    return op


def paths() -> dict[str, dict[str, Any]]:
    """The document's paths, in the order of the route table."""
    out: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        out.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return out


KEYED: list[dict[str, list[str]]] = [{"apiKey": []}]

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
        f" {LIST_FAILURES.path} lists the addresses.",
    },
    "paths": paths(),
    "components": {
        "schemas": _GENERATED["$defs"],
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
    },
}


async def serve(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)

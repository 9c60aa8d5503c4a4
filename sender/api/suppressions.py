"""Suppression-list administration (API key): import addresses, look one up.

Teams arrive with suppression lists from their previous tool; importing them
before the first plan is what keeps those people from being mailed again.
Addresses are validated and normalised like recipient rows, so ``Ann@X.org``
suppresses ``ann@x.org``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.contract.plans import MAX_SUPPRESSIONS, SuppressionImport
from emailplan.sender import ledger
from emailplan.sender.api.auth import require_api_key
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of


def _field(loc: tuple[int | str, ...]) -> str:
    """``("emails", 1)`` → ``emails[1]``: the field as the request wrote it."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_body(raw: bytes) -> tuple[list[str], str]:
    """Validate the body as ``SuppressionImport`` and normalise every address; errors name the field."""
    try:
        body: Any = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "body must be JSON", "body") from exc
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be an object like {"emails": [...]}', "body")
    emails = body.get("emails")
    if isinstance(emails, list) and len(emails) > MAX_SUPPRESSIONS:
        raise ApiError(413, f"at most {MAX_SUPPRESSIONS} addresses a request", "emails")
    try:
        request = SuppressionImport.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(400, str(first.get("msg", "invalid value")), _field(tuple(first["loc"]))) from exc
    out: list[str] = []
    for i, value in enumerate(request.emails):
        try:
            out.append(normalize_address(value))
        except AddressError as exc:
            raise ApiError(400, f"not a valid address: {exc}", f"emails[{i}]") from exc
    return out, request.reason.value


@require_api_key
async def add(request: web.Request) -> web.Response:
    emails, reason = parse_body(await request.read())
    added = await ledger.add_suppressions(state_of(request).engine, emails, reason)
    return web.json_response({"received": len(emails), "added": added}, status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/suppressions", add)

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

from emailplan.contract import recipients
from emailplan.contract.plans import SuppressionReason
from emailplan.sender import ledger
from emailplan.sender.api.auth import require_api_key
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of

REASONS = tuple(SuppressionReason)
MAX_BATCH = 10_000


def parse_body(raw: bytes) -> tuple[list[str], str]:
    """Validate ``{"emails": [...], "reason": "manual"}``; errors name the field."""
    try:
        body: Any = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "body must be JSON", "body") from exc
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be an object like {"emails": [...]}', "body")
    emails = body.get("emails")
    if not isinstance(emails, list) or not emails:
        raise ApiError(400, "emails must be a non-empty list of addresses", "emails")
    if len(emails) > MAX_BATCH:
        raise ApiError(413, f"at most {MAX_BATCH} addresses a request", "emails")
    reason = body.get("reason", "manual")
    if reason not in REASONS:
        raise ApiError(400, f"reason must be one of {', '.join(REASONS)}", "reason")
    out: list[str] = []
    for i, value in enumerate(emails):
        checked = recipients.validate_row(i, {"email": value}) if isinstance(value, str) else None
        if not isinstance(checked, recipients.Recipient):
            raise ApiError(400, f"emails[{i}] is not a valid address", f"emails[{i}]")
        out.append(checked.email)
    return out, str(reason)


@require_api_key
async def add(request: web.Request) -> web.Response:
    emails, reason = parse_body(await request.read())
    added = await ledger.add_suppressions(state_of(request).engine, emails, reason)
    return web.json_response({"received": len(emails), "added": added}, status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/suppressions", add)

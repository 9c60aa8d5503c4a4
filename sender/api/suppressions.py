"""Suppression-list administration (API key): import addresses.

Teams arrive with suppression lists from their previous tool; importing them
before the first plan is what keeps those people from being mailed again.
Addresses go through the same strict check as recipient rows
(``emailplan.contract.addresses``) and are compared case-insensitively, so
``Ann@X.org`` suppresses ``ann@x.org``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.sender import ledger
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.jsonbody import read_object
from emailplan.sender.api.state import state_of

REASONS = ("manual", "bounce", "complaint", "unsubscribe")
MAX_BATCH = 10_000
MAX_BODY = 4 * 1024 * 1024


def parse_body(body: dict[str, Any]) -> tuple[list[str], str]:
    """Validate ``{"emails": [...], "reason": "manual"}``; errors name the field and the reason."""
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
        if not isinstance(value, str):
            raise ApiError(400, "must be a string address", f"emails[{i}]")
        try:
            out.append(normalize_address(value))
        except AddressError as exc:
            raise ApiError(400, str(exc), f"emails[{i}]") from exc
    return out, str(reason)


async def add(request: web.Request) -> web.Response:
    body = await read_object(request, MAX_BODY, '{"emails": [...]}')
    emails, reason = parse_body(body)
    added = await ledger.add_suppressions(state_of(request).engine, emails, reason)
    return web.json_response({"received": len(emails), "added": added}, status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/suppressions", add)

"""Suppression-list administration (API key): import addresses, look one up.

Teams arrive with suppression lists from their previous tool; importing them
before the first plan is what keeps those people from being mailed again.
Addresses go through the same strict check as recipient rows
(``emailplan.contract.addresses``) and are compared case-insensitively, so
``Ann@X.org`` suppresses ``ann@x.org``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.contract.plans import MAX_SUPPRESSIONS, SuppressionImport
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.jsonbody import read_object, validation_error
from emailplan.sender.api.state import state_of
from emailplan.sender.store import loading

MAX_BODY = 4 * 1024 * 1024


def parse_body(body: dict[str, Any]) -> tuple[list[str], str]:
    """Validate the body as ``SuppressionImport`` and normalise every address; errors name the field."""
    emails = body.get("emails")
    if isinstance(emails, list) and len(emails) > MAX_SUPPRESSIONS:
        raise ApiError(413, f"at most {MAX_SUPPRESSIONS} addresses a request", "emails")
    try:
        request = SuppressionImport.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
    out: list[str] = []
    for i, value in enumerate(request.emails):
        try:
            out.append(normalize_address(value))
        except AddressError as exc:
            raise ApiError(400, f"not a valid address: {exc}", f"emails[{i}]") from exc
    return out, request.reason.value


async def add(request: web.Request) -> web.Response:
    body = await read_object(request, MAX_BODY, '{"emails": [...]}')
    emails, reason = parse_body(body)
    added = await loading.add_suppressions(state_of(request).engine, emails, reason)
    return web.json_response({"received": len(emails), "added": added}, status=200)

"""Statistics (API key): per-plan counts and the sent-in-last-N-hours count.

Counts come from ``plan_counters``, maintained in the same transaction as
every status change and event, so a read is one primary-key look-up however
large the plan is. A plan with A/B variants also shows each variant's counts
over its test cohort (one pass over the cohort's rows on the bucket index).
"""

from __future__ import annotations

import uuid

from aiohttp import web

from emailplan.contract.httpapi import DEFAULT_HOURS, MAX_HOURS
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of
from emailplan.sender.store import plans


def plan_id_of(request: web.Request) -> uuid.UUID:
    raw = request.match_info.get("planId", "")
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise ApiError(400, "planId must be a UUID (the EmailPlan's metadata.uid)", "planId") from exc


async def count(request: web.Request) -> web.Response:
    """The plan's counters; with A/B variants also each variant's counts over the test cohort."""
    plan_id = plan_id_of(request)
    engine = state_of(request).engine
    counts = await plans.get_counts(engine, plan_id)
    if counts is None:
        raise ApiError(404, "unknown plan", "planId")
    body: dict[str, object] = {"planId": str(plan_id), **counts}
    variants = await plans.variant_counts(engine, plan_id)
    if variants:
        body["variants"] = [v.model_dump(mode="json") for v in variants]
    return web.json_response(body)


async def sent(request: web.Request) -> web.Response:
    raw = request.query.get("hours", str(DEFAULT_HOURS))
    try:
        hours = int(raw)
    except ValueError as exc:
        raise ApiError(400, f"hours must be an integer from 1 to {MAX_HOURS}", "hours") from exc
    if not 1 <= hours <= MAX_HOURS:
        raise ApiError(400, f"hours must be an integer from 1 to {MAX_HOURS}", "hours")
    n = await plans.sent_in_last_hours(state_of(request).engine, float(hours))
    return web.json_response({"count": n, "hours": hours})

"""``GET /v1/plans/{planId}/failures`` (API key): the plan's unsent addresses with why, paged.

The plan view carries the top reasons with counts; this lists the addresses behind
them (``emailplan failures`` prints it), oldest first, ``limit`` at a time. ``after``
is the ``next`` cursor of the page before. A query parameter this endpoint does not
know, or a value it cannot use, is a 400 naming the parameter: a typo must not
quietly list something else.
"""

from __future__ import annotations

from aiohttp import web

from emailplan.contract.failures import DEFAULT_FAILURE_PAGE, MAX_FAILURE_PAGE
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of
from emailplan.sender.api.stats import plan_id_of
from emailplan.sender.store import plans
from emailplan.sender.store.failures import failure_page

PARAMETERS = ("limit", "after")
MAX_CURSOR = 2**63 - 1  # message ids are bigint


def _whole(request: web.Request, name: str, default: int, low: int, high: int, what: str) -> int:
    raw = request.query.getall(name, [])
    if not raw:
        return default
    if len(raw) > 1:
        raise ApiError(400, f"{name} given {len(raw)} times; give it once", name)
    value = raw[0].strip()
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ApiError(400, f"{name} must be {what}, got {value[:40]!r}", name)
    return int(value)


async def list_failures(request: web.Request) -> web.Response:
    plan_id = plan_id_of(request)
    unknown = sorted(set(request.query) - set(PARAMETERS))
    if unknown:
        raise ApiError(
            400, f"unknown query parameter {unknown[0]!r}; known: {', '.join(PARAMETERS)}", unknown[0]
        )
    limit = _whole(
        request,
        "limit",
        DEFAULT_FAILURE_PAGE,
        1,
        MAX_FAILURE_PAGE,
        f"a whole number from 1 to {MAX_FAILURE_PAGE}",
    )
    after = _whole(request, "after", 0, 0, MAX_CURSOR, "the next cursor of the page before")
    try:
        page = await failure_page(state_of(request).engine, plan_id, after=after, limit=limit)
    except plans.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    return web.Response(text=page.model_dump_json(), content_type="application/json")

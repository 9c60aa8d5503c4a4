"""Follow-ups and retries through the administration API (``.../recipients/from-plan``, ``.../retry``).

The operator names the source plan and the outcome; the ledger computes the
audience (``store.followups``). A retry names its generation; the ledger re-queues
(``store.retries``). Both are idempotent, like every plan endpoint: a repeated call
adds no one and re-queues nothing.
"""

from __future__ import annotations

import logging

from aiohttp import web

from emailplan.contract.followups import FromPlanSource, RetryRequest
from emailplan.sender.api import jsonbody
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.plans import _json, _queue
from emailplan.sender.api.state import state_of
from emailplan.sender.api.stats import plan_id_of
from emailplan.sender.store import followups, plans, retries

log = logging.getLogger(__name__)


async def load_from_plan(request: web.Request) -> web.Response:
    """Take the audience from the source plan's outcomes and complete the list; the answer is the job."""
    state = state_of(request)
    plan_id = plan_id_of(request)
    source = await jsonbody.read_model(request, 64 * 1024, FromPlanSource)
    try:
        job = await followups.load_audience(state.engine, plan_id, source, _queue(state))
    except plans.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    except plans.PlanClosedError as exc:
        raise ApiError(409, str(exc), "planId") from exc
    except followups.SourceNotReadyError as exc:
        raise ApiError(400 if exc.missing else 409, str(exc), "planId") from exc
    log.info(
        "follow-up audience loaded",
        extra={
            "plan": str(plan_id),
            "source": str(source.plan_id),
            "outcome": source.outcome.value,
            "accepted": job.accepted,
            "suppressed": job.suppressed,
        },
    )
    return _json(job)


async def retry(request: web.Request) -> web.Response:
    """Re-queue a done plan's transient failures and soft bounces once for the generation asked."""
    state = state_of(request)
    plan_id = plan_id_of(request)
    asked = await jsonbody.read_model(request, 64 * 1024, RetryRequest)
    try:
        result = await retries.retry_plan(state.engine, plan_id, asked.generation, _queue(state))
    except plans.PlanNotFoundError as exc:
        raise ApiError(404, "unknown plan", "planId") from exc
    except retries.PlanBusyError as exc:
        raise ApiError(409, str(exc), "planId") from exc
    log.info(
        "plan retried",
        extra={"plan": str(plan_id), "generation": result.generation, "requeued": result.requeued},
    )
    return _json(result)

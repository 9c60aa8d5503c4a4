"""Suspend or resume a plan the way the operator does, for tests and benchmarks that run no operator."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.sender.store import plans


async def set_suspended(engine: AsyncEngine, plan_id: uuid.UUID, suspended: bool) -> plans.LedgerPlan:
    """The plan PUT again with ``suspended`` set (the one channel), here straight to the ledger."""
    plan = await plans.get_plan(engine, plan_id)
    assert plan is not None, f"no plan {plan_id}"
    view, _ = await plans.upsert_plan(
        engine,
        plan_id,
        name=plan.name,
        namespace=plan.namespace,
        spec=plan.spec,
        rate_per_second=plan.rate_per_second,
        start_at=plan.start_at,
        suspended=suspended,
    )
    return view

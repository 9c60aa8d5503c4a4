"""The plan's failed and suppressed messages, page by page (``GET /v1/plans/{planId}/failures``).

Apart from the ledger's writes: this is a read for people, paged by message id on the
partial index ``ix_messages_plan_id_id_unsent``, so a page costs the same on a plan
with ten failures or a million.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.failures import NO_DETAIL, FailedMessage, FailurePage, MessageOutcome
from emailplan.sender.store.plans import PlanNotFoundError

_PAGE = text(
    "SELECT id, email, status, reason, error, updated_at FROM messages "
    "WHERE plan_id = :p AND status IN ('failed', 'suppressed') AND id > :after "
    "ORDER BY id LIMIT :n"
)


async def failure_page(engine: AsyncEngine, plan_id: uuid.UUID, *, after: int, limit: int) -> FailurePage:
    """Up to ``limit`` unsent messages with an id above ``after``; ``next`` when more may follow."""
    async with engine.connect() as conn:
        if (await conn.execute(text("SELECT 1 FROM plans WHERE id = :p"), {"p": plan_id})).first() is None:
            raise PlanNotFoundError(str(plan_id))
        rows = (await conn.execute(_PAGE, {"p": plan_id, "after": after, "n": limit + 1})).mappings().all()
    items = [
        FailedMessage(
            email=r["email"],
            status=MessageOutcome(r["status"]),
            reason=r["reason"] or NO_DETAIL,
            detail=r["error"],
            at=r["updated_at"],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return FailurePage(items=items, next=str(rows[limit - 1]["id"]) if more else None)

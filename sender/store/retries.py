"""Retrying what failed for a passing reason: a finished plan's transient failures and soft bounces.

A retry is asked with a generation (the EmailPlan's ``spec.retry.generation``) and
runs once per generation: the plan row keeps the last one done, and a request at
or below it changes nothing, so the operator may repeat it after any crash. The
messages chosen go back to ``created`` (they leave ``failed`` or ``sent`` in the
counters, ``retried`` counts them) and are queued again; the plan is ``ready``
until they are handled and then ``done`` again, as the ledger decides for any plan.

Never retried: a hard bounce, a complaint, an unsubscribe, an address on the
suppression list, a message SES refused (its reason is not a transient one), and a
soft bounce SES delivered after all.
"""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.contract.followups import TRANSIENT_FAILURE_PREFIX, RetryResult
from emailplan.contract.plans import PlanState
from emailplan.sender.store import loading, shared
from emailplan.sender.store.plans import QueueSink, _plan_row

# Which messages a retry takes (``m`` is the plan's message row).
RETRYABLE_SQL = """
    ((m.status = 'failed' AND m.reason LIKE CAST(:transient AS text) || '%')
      OR (m.status = 'sent' AND m.soft_bounced_at IS NOT NULL AND m.delivered_at IS NULL))
    AND m.bounced_at IS NULL AND m.complained_at IS NULL AND m.unsubscribed_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = m.email)
"""

_REQUEUE = text(
    f"""
    WITH picked AS (
        SELECT m.id, m.status AS was, m.reason FROM messages m
        WHERE m.plan_id = :p AND {RETRYABLE_SQL}
        ORDER BY m.id
        FOR UPDATE OF m
    ), moved AS (
        UPDATE messages m SET status = 'created', enqueued = false, attempts = 0, error = NULL,
            reason = NULL, soft_bounced_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = now()
        FROM picked WHERE m.id = picked.id
        RETURNING picked.was, picked.reason
    )
    SELECT was, reason FROM moved
    """  # noqa: S608 - RETRYABLE_SQL is a constant
)

_UNCOUNT_REASONS = text(
    "UPDATE plan_failure_reasons f SET count = greatest(f.count - t.n, 0) "
    "FROM unnest(CAST(:reasons AS text[]), CAST(:counts AS bigint[])) AS t(r, n) "
    "WHERE f.plan_id = :p AND f.reason = t.r"
)


class PlanBusyError(Exception):
    """The plan is not finished (or was stopped): a retry runs only on a done plan."""


async def retry_plan(
    engine: AsyncEngine, plan_id: uuid.UUID, generation: int, queue: QueueSink
) -> RetryResult:
    """Re-queue the plan's transient failures and soft bounces once for ``generation``.

    Raises ``PlanNotFoundError`` and ``PlanBusyError`` (still sending, or stopped).
    """
    async with engine.begin() as conn:
        row = await _plan_row(conn, plan_id, lock=True)
        done_before = int(row["retry_generation"])
        if generation <= done_before:
            return RetryResult(generation=done_before, requeued=0)
        if row["state"] != PlanState.DONE:
            raise PlanBusyError(f"plan is {row['state']}: a retry runs once the plan is done")
        requeued = await _requeue(conn, plan_id)
        await conn.execute(
            text(
                "UPDATE plans SET retry_generation = :g, updated_at = now(), "
                "state = CASE WHEN :n > 0 THEN :ready ELSE state END WHERE id = :p"
            ),
            {"g": generation, "n": requeued, "p": plan_id, "ready": PlanState.READY.value},
        )
    if requeued:
        await loading.release_share(engine, plan_id, float(row["release_percent"]), queue)
    return RetryResult(generation=generation, requeued=requeued)


async def _requeue(conn: AsyncConnection, plan_id: uuid.UUID) -> int:
    """Move the retryable messages back to ``created``, with the counters and reasons, in one transaction."""
    moved = (await conn.execute(_REQUEUE, {"p": plan_id, "transient": TRANSIENT_FAILURE_PREFIX})).all()
    was = Counter(status for status, _ in moved)
    await shared.bump(
        conn,
        plan_id,
        {"created": len(moved), "failed": -was["failed"], "sent": -was["sent"], "retried": len(moved)},
    )
    reasons = sorted(Counter(reason for status, reason in moved if status == "failed" and reason).items())
    if reasons:
        await conn.execute(
            _UNCOUNT_REASONS,
            {"p": plan_id, "reasons": [r for r, _ in reasons], "counts": [n for _, n in reasons]},
        )
    return len(moved)

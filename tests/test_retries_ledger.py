"""Retries in the ledger (real PostgreSQL): which messages a retry takes, once per generation."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.api import NullQueue

from emailplan.sender.store import claims, loading, plans, retries, sendresults
from emailplan.sender.store.sendresults import SendResult

SPEC = {"from": "News <news@example.com>", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}
TRANSIENT = "gave up after 5 attempts: InternalFailure: An internal failure occurred"
REFUSED = "MessageRejected: Email address is not verified"

# Each recipient by what happened to its message; ``failed`` ones carry their error.
FATES: dict[str, tuple[str, str | None, str]] = {
    "transient": ("failed", TRANSIENT, ""),
    "refused": ("failed", REFUSED, ""),
    "soft": ("sent", None, "soft_bounced_at = now()"),
    "soft-then-delivered": ("sent", None, "soft_bounced_at = now(), delivered_at = now()"),
    "hard": ("sent", None, "bounced_at = now()"),
    "complained": ("sent", None, "complained_at = now(), delivered_at = now()"),
    "soft-unsubscribed": ("sent", None, "soft_bounced_at = now(), unsubscribed_at = now()"),
    "soft-suppressed": ("sent", None, "soft_bounced_at = now()"),
    "delivered": ("sent", None, "delivered_at = now()"),
}
RETRIED = {"transient", "soft"}


async def send_all(
    engine: AsyncEngine, plan_id: uuid.UUID, ids: list[int], outcome: dict[str, tuple[str, str | None]]
) -> None:
    """Claim ``ids`` and record each one's (status, error) by the fate its address names."""
    results = []
    for c in await claims.claim(engine, plan_id, ids, "w", 60):
        status, error = outcome[c.email.split("@")[0]]
        ses_id = f"ses-{uuid.uuid4().hex}" if status == "sent" else None
        results.append(SendResult(c.id, status, ses_id, error))
    await sendresults.record_results(engine, plan_id, results)


async def done_plan(engine: AsyncEngine) -> uuid.UUID:
    plan_id = uuid.uuid4()
    await plans.upsert_plan(engine, plan_id, name="p", namespace="ns", spec=SPEC)
    rows = [(i, {"email": f"{fate}@example.com"}) for i, fate in enumerate(FATES, 1)]
    await loading.insert_recipients(engine, plan_id, rows)
    queue = NullQueue()
    await loading.complete_recipients(engine, plan_id, queue)
    await send_all(
        engine, plan_id, [i for b in queue.enqueued for i in b], {f: (s, e) for f, (s, e, _) in FATES.items()}
    )
    async with engine.begin() as conn:
        for fate, (_, _, sets) in FATES.items():
            if sets:
                await conn.execute(
                    text(f"UPDATE messages SET {sets} WHERE plan_id = :p AND email = :e"),
                    {"p": plan_id, "e": f"{fate}@example.com"},
                )
    await loading.add_suppressions(engine, ["soft-suppressed@example.com"], "manual")
    view = await plans.get_plan(engine, plan_id)
    assert view is not None and view.state == "done"
    return plan_id


async def statuses(engine: AsyncEngine, plan_id: uuid.UUID) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email, status FROM messages WHERE plan_id = :p"), {"p": plan_id}
        )
        return {email.split("@")[0]: status for email, status in rows.all()}


async def test_a_retry_requeues_transient_failures_and_soft_bounces_once(engine: AsyncEngine) -> None:
    plan_id = await done_plan(engine)
    before = await plans.get_counts(engine, plan_id)
    assert before is not None
    queue = NullQueue()

    result = await retries.retry_plan(engine, plan_id, 1, queue)
    assert (result.generation, result.requeued) == (1, len(RETRIED))
    now = await statuses(engine, plan_id)
    assert {f for f, s in now.items() if s == "created"} == RETRIED
    queued = [i for b in queue.enqueued for i in b]
    assert len(queued) == len(RETRIED)
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert counts["retried"] == 2 and counts["created"] == 2
    assert (counts["sent"], counts["failed"]) == (before["sent"] - 1, before["failed"] - 1)
    view = await plans.describe_plan(engine, plan_id)
    assert view is not None and view.state == "ready" and view.retry_generation == 1
    assert [(f.reason, f.count) for f in view.failures if not f.suppressed] == [(REFUSED, 1)]

    # The same generation again queues nothing; a newer one waits until the plan is done.
    assert (await retries.retry_plan(engine, plan_id, 1, queue)).requeued == 0
    assert [i for b in queue.enqueued for i in b] == queued
    with pytest.raises(retries.PlanBusyError, match="ready"):
        await retries.retry_plan(engine, plan_id, 2, queue)

    # The retried messages are sent this time; the plan is done again, the sums hold.
    await send_all(engine, plan_id, queued, {f: ("sent", None) for f in RETRIED})
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert counts["total"] == counts["sent"] + counts["failed"] + counts["stopped"] + counts["suppressed"]
    assert (counts["sent"], counts["failed"], counts["retried"]) == (
        before["sent"] + 1,
        before["failed"] - 1,
        2,
    )
    view = await plans.describe_plan(engine, plan_id)
    assert view is not None and view.state == "done"
    # Nothing is left to retry: a newer generation runs and queues no one.
    assert (await retries.retry_plan(engine, plan_id, 2, queue)).requeued == 0
    assert (await plans.get_plan(engine, plan_id)).state == "done"  # type: ignore[union-attr]

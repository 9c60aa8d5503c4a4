"""Follow-up audiences in the ledger: a plan's recipients taken from another plan's outcomes.

The audience is one INSERT ... SELECT over the source plan's messages, in the
transaction that records the load job, so it is taken once, at the moment the
follow-up starts, and never copied through the operator. Suppressions (hard
bounces, complaints, unsubscribes, imports) made since the source plan sent are
applied again by the same join the list intake uses. Once the follow-up's list is
complete, asking again answers the recorded job and adds no one: each recipient
is mailed at most once whatever the operator repeats.
"""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.contract.followups import FollowUpOutcome, FromPlanSource
from emailplan.contract.plans import SUPPRESSED_PREFIX, LoadJob, LoadSourceKind, LoadState, PlanState
from emailplan.sender.store import loading, shared
from emailplan.sender.store.plans import PlanClosedError, QueueSink, _load, _plan_row

# Which source messages each outcome selects (``m`` is the source plan's message row).
# Opens here are human opens only: a machine open never sets ``opened_at``.
OUTCOME_SQL: dict[FollowUpOutcome, str] = {
    FollowUpOutcome.NOT_OPENED: (
        "m.status = 'sent' AND m.opened_at IS NULL AND m.clicked_at IS NULL AND m.bounced_at IS NULL"
    ),
    FollowUpOutcome.NOT_CLICKED: "m.status = 'sent' AND m.clicked_at IS NULL AND m.bounced_at IS NULL",
    FollowUpOutcome.DELIVERED: "m.delivered_at IS NOT NULL",
    FollowUpOutcome.SOFT_BOUNCED: "m.soft_bounced_at IS NOT NULL AND m.bounced_at IS NULL",
    FollowUpOutcome.FAILED: "m.status = 'failed'",
}


class SourceNotReadyError(Exception):
    """The source plan is unknown, the follow-up itself, or not finished yet."""

    def __init__(self, message: str, *, missing: bool = False) -> None:  # missing: never becomes ready
        super().__init__(message)
        self.missing = missing


def _audience_sql(outcome: FollowUpOutcome) -> str:
    return f"""
    WITH ins AS (
        INSERT INTO messages (plan_id, row_no, email, name, vars, status, reason, bucketed)
        SELECT CAST(:plan AS uuid), CAST(row_number() OVER (ORDER BY m.id) AS int), m.email, m.name, m.vars,
               CASE WHEN s.email IS NULL THEN 'created' ELSE 'suppressed' END,
               CAST(:supp AS text) || s.reason, CAST(:bucketed AS boolean)
        FROM messages m LEFT JOIN suppressions s ON s.email = m.email
        WHERE m.plan_id = CAST(:source AS uuid) AND {OUTCOME_SQL[outcome]}
        ON CONFLICT (plan_id, email) DO NOTHING
        RETURNING status, reason
    )
    SELECT status, reason FROM ins
    """  # noqa: S608 - the predicate is one of OUTCOME_SQL's constants


async def load_audience(
    engine: AsyncEngine, plan_id: uuid.UUID, source: FromPlanSource, queue: QueueSink
) -> LoadJob:
    """Take the follow-up's audience from the source plan and complete the list (idempotent).

    Raises ``SourceNotReadyError`` (the source is unknown, this plan, or still sending) and
    ``PlanClosedError`` (the follow-up was stopped). A list completed before is answered
    as it was: the audience is never taken twice.
    """
    async with engine.begin() as conn:
        row = await _plan_row(conn, plan_id, lock=True)
        if row["state"] == PlanState.STOPPED:
            raise PlanClosedError("plan is stopped")
        job = await _load(conn, plan_id)
        taken = row["recipients_complete"] and job is not None and job.state is LoadState.LOADED
        if not taken:
            await _check_source(conn, plan_id, source.plan_id)
            job = await _take(conn, plan_id, source, bucketed=bool(row["bucketed"]))
    if row["state"] != PlanState.DONE:  # again when taken before: queues what a crash left unqueued
        await loading.complete_recipients(engine, plan_id, queue)
    assert job is not None
    return job


async def _check_source(conn: AsyncConnection, plan_id: uuid.UUID, source_id: uuid.UUID) -> None:
    if source_id == plan_id:
        raise SourceNotReadyError("a follow-up cannot take its audience from itself", missing=True)
    found = (
        await conn.execute(text("SELECT state FROM plans WHERE id = :p"), {"p": source_id})
    ).scalar_one_or_none()
    if found is None:
        raise SourceNotReadyError(f"source plan {source_id} is unknown", missing=True)
    if found != PlanState.DONE:
        raise SourceNotReadyError(f"source plan {source_id} is {found}, not done: its outcomes are not final")


async def _take(
    conn: AsyncConnection, plan_id: uuid.UUID, source: FromPlanSource, *, bucketed: bool
) -> LoadJob:
    """Forget an unfinished earlier attempt, insert the audience, count it and record the job
    (``bucketed``: the plan's flag, read under the plan's lock, goes on every row)."""
    await conn.execute(text("DELETE FROM messages WHERE plan_id = :p"), {"p": plan_id})
    await conn.execute(
        text("UPDATE plan_counters SET total = 0, created = 0, suppressed = 0 WHERE plan_id = :p"),
        {"p": plan_id},
    )
    await conn.execute(text("DELETE FROM plan_failure_reasons WHERE plan_id = :p"), {"p": plan_id})
    inserted = (
        await conn.execute(
            text(_audience_sql(source.outcome)),
            {"plan": plan_id, "source": source.plan_id, "supp": SUPPRESSED_PREFIX, "bucketed": bucketed},
        )
    ).all()
    statuses = Counter(status for status, _ in inserted)
    await shared.bump(
        conn,
        plan_id,
        {"total": len(inserted), "created": statuses["created"], "suppressed": statuses["suppressed"]},
    )
    await shared.bump_reasons(conn, plan_id, (reason for _, reason in inserted))
    job = LoadJob(
        state=LoadState.LOADED,
        source=LoadSourceKind.FROM_PLAN,
        from_plan=source,
        accepted=statuses["created"],
        suppressed=statuses["suppressed"],
        attempts=1,
    )
    await conn.execute(
        text(
            "INSERT INTO recipient_loads (plan_id, state, job, updated_at) "
            "VALUES (:p, :state, CAST(:job AS jsonb), now()) "
            "ON CONFLICT (plan_id) DO UPDATE SET state = excluded.state, job = excluded.job, "
            "updated_at = now()"
        ),
        {"p": plan_id, "state": job.state.value, "job": job.model_dump_json()},
    )
    return job

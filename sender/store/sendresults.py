"""Send outcomes into the ledger: ``record_results`` writes a batch of them at once.

Each status change updates ``plan_counters`` in the same transaction, so counts stay exact.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.failures import failure_reason
from emailplan.contract.plans import PlanState
from emailplan.sender.store import shared


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send, written back in a batch by ``record_results``."""

    id: int
    status: str  # "sent" | "failed"
    ses_message_id: str | None = None
    error: str | None = None
    at: datetime | None = None  # when SES answered (results are written later, in batches)


# One statement, one round trip, in autocommit: the results, the counters, the failure reasons
# and the "done" check together. The plan's counters row is the one row every writer of a
# plan updates; in a BEGIN / write / bump / done check / COMMIT transaction its lock was held
# across three client round trips, and the processes of a pod queued behind each other's
# (a second process added 7 % to a pod's rate). Here it is locked for the statement only.
# Order of the locks as everywhere: messages, then the counters row (``cnt``), then reason
# rows (``why`` joins ``cnt``, so no reason row is locked before the counters row), then the
# plan row. ``cnt`` returns the counters after this write, including any concurrent writer's
# committed change (READ COMMITTED re-reads a row it waited for), which decides ``done``.
RECORD_RESULTS = text(
    f"""
    WITH r AS (
        SELECT DISTINCT ON (id) * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:st AS text[]), CAST(:sid AS text[]),
            CAST(:err AS text[]), CAST(:at AS timestamptz[]), CAST(:reason AS text[]))
            AS r(id, status, sid, err, at, reason)
    ),
    old AS (
        SELECT m.id, m.status FROM messages m JOIN r ON r.id = m.id
        WHERE (m.plan_id = :p) IS TRUE AND (m.status = 'processing'
            OR (r.status = 'sent' AND m.status IN ('created', 'stopped')))
        FOR UPDATE OF m
    ),
    moved AS (
        UPDATE messages m SET status = r.status, ses_message_id = r.sid, error = r.err, reason = r.reason,
            sent_at = CASE WHEN r.status = 'sent' THEN coalesce(r.at, now()) ELSE NULL END,
            lease_owner = NULL, lease_until = NULL, updated_at = now()
        FROM r JOIN old ON old.id = r.id
        WHERE m.id = r.id
        RETURNING old.status AS was, r.status AS now, r.reason
    ),
    d AS (
        SELECT count(*) AS n,
            count(*) FILTER (WHERE was = 'processing') AS processing,
            count(*) FILTER (WHERE was = 'created') AS created,
            count(*) FILTER (WHERE was = 'stopped') AS stopped,
            count(*) FILTER (WHERE now = 'sent') AS sent,
            count(*) FILTER (WHERE now = 'failed') AS failed
        FROM moved
    ),
    cnt AS (
        UPDATE plan_counters c SET processing = c.processing - d.processing,
            created = c.created - d.created, stopped = c.stopped - d.stopped,
            sent = c.sent + d.sent, failed = c.failed + d.failed
        FROM d WHERE c.plan_id = :p AND d.n > 0
        RETURNING c.created, c.processing
    ),
    why AS (
        INSERT INTO plan_failure_reasons (plan_id, reason, count)
        SELECT :p, w.reason, w.n FROM cnt, (
            SELECT reason, count(*) AS n FROM moved WHERE now = 'failed' AND reason IS NOT NULL
            GROUP BY reason) w
        ON CONFLICT (plan_id, reason) DO UPDATE SET count = plan_failure_reasons.count + excluded.count
        RETURNING 1
    ),
    done AS (
        UPDATE plans p SET state = {shared.state_sql(PlanState.DONE)}, updated_at = now() FROM cnt
        WHERE p.id = :p AND {shared.done_when("cnt")}
        RETURNING 1
    )
    SELECT (SELECT n FROM d), (SELECT count(*) FROM why), (SELECT count(*) FROM done)
    """  # noqa: S608 - plan states formatted from PlanState
)


async def record_results(engine: AsyncEngine, plan_id: uuid.UUID, results: Sequence[SendResult]) -> int:
    """Write a batch of send outcomes and the counters in one statement; returns rows changed.

    A ``sent`` result is written for any row that is not final yet, whoever holds it, and
    also for a row stopped meanwhile (the plan was stopped or deleted while the send was
    in flight): the email left through SES, so the ledger must say so. A ``failed`` result
    only applies to a row still ``processing``. The plan turns ``done`` when nothing is left.
    """
    if not results:
        return 0
    async with shared.autocommit(engine) as conn:
        changed = (
            await conn.execute(
                RECORD_RESULTS,
                {
                    "p": plan_id,
                    "ids": [r.id for r in results],
                    "st": [r.status for r in results],
                    "sid": [r.ses_message_id for r in results],
                    "err": [r.error for r in results],
                    "at": [r.at for r in results],
                    "reason": [failure_reason(r.error) if r.status == "failed" else None for r in results],
                },
            )
        ).scalar_one()
    return int(changed)

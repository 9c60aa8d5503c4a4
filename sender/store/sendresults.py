"""Send outcomes into the ledger: ``record_results`` writes a batch of them at once.

Each status change updates ``plan_counters`` in the same transaction, so counts stay exact.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.failures import failure_reason
from emailplan.sender.store import shared
from emailplan.sender.store.plans import _maybe_done


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send, written back in a batch by ``record_results``."""

    id: int
    status: str  # "sent" | "failed"
    ses_message_id: str | None = None
    error: str | None = None
    at: datetime | None = None  # when SES answered (results are written later, in batches)


RECORD_RESULTS = text(
    """
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
    )
    UPDATE messages m SET status = r.status, ses_message_id = r.sid, error = r.err, reason = r.reason,
        sent_at = CASE WHEN r.status = 'sent' THEN coalesce(r.at, now()) ELSE NULL END,
        lease_owner = NULL, lease_until = NULL, updated_at = now()
    FROM r JOIN old ON old.id = r.id
    WHERE m.id = r.id
    RETURNING old.status, r.status, r.reason
    """
)


async def record_results(engine: AsyncEngine, plan_id: uuid.UUID, results: Sequence[SendResult]) -> int:
    """Write a batch of send outcomes and the counters in one transaction; returns rows changed.

    A ``sent`` result is written for any row that is not final yet, whoever holds it, and
    also for a row stopped meanwhile (the plan was stopped or deleted while the send was
    in flight): the email left through SES, so the ledger must say so. A ``failed`` result
    only applies to a row still ``processing``. The plan turns ``done`` when nothing is left.
    """
    if not results:
        return 0
    async with engine.begin() as conn:
        rows = (
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
        ).all()
        before = Counter(old for old, _, _ in rows)
        after = Counter(new for _, new, _ in rows)
        await shared.bump(
            conn,
            plan_id,
            {
                "processing": -before["processing"],
                "created": -before["created"],
                "stopped": -before["stopped"],
                "sent": after["sent"],
                "failed": after["failed"],
            },
        )
        await shared.bump_reasons(conn, plan_id, (reason for _, new, reason in rows if new == "failed"))
        await _maybe_done(conn, plan_id)
    return len(rows)

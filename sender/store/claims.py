"""The worker's side of a message's lease: claim, reclaim orphans, release, extend.

A worker owns a message only while its lease runs; an expired lease is reclaimed by anyone,
so a crashed pod loses nothing. A suppressed address is re-checked at claim time.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.plans import SUPPRESSED_PREFIX, PlanState
from emailplan.sender.store import shared
from emailplan.sender.store.plans import _maybe_done


@dataclass(frozen=True)
class Claimed:
    """A message this worker now holds under lease, with what it needs to render it."""

    id: int
    email: str
    name: str | None
    vars: dict[str, Any]
    attempts: int
    bucket: int  # the recipient's cohort bucket: which A/B variant it receives


# SES event kinds that prove a message left SES's door (``sesevents.Kind`` values).
LEFT_SES_EVENTS = ("send", "delivery", "bounce", "complaint", "delivery_delay", "open", "click")

# Statements that find rows by id check the plan with ``(m.plan_id = :p) IS TRUE``, not a bare
# ``m.plan_id = :p``: the bare form lets the planner answer "rows of this plan in status X"
# from the (plan_id, status) index instead of looking the ids up by primary key. With
# statistics taken before a list was loaded it estimates that at one row, and a write of 16
# results then read every created and processing row of the plan (70 ms a write, PostgreSQL
# at three times the worker's CPU per email in the throughput benchmark). ``IS TRUE`` is the
# same test for a non-null column, but no index can answer it, so the primary key is used.
# For the same reason the plan's row is joined by ``:plan``, not by ``m.plan_id``: the planner
# also took the join's ``m.plan_id = p.id`` as a way into the (plan_id, status) index.

# A row taken from an expired lease is *unknown*: its holder may have sent it and died before
# the result was written. If SES already reported an event for it (tagged with our message id),
# it is reconciled as ``sent`` instead of being sent again; a suppressed address is never sent.
_CLAIM_SQL = """
WITH c AS (
    SELECT m.id, m.status AS old_status,
        CASE
            WHEN m.status = 'processing' AND EXISTS (
                SELECT 1 FROM events e WHERE e.message_id = m.id
                AND e.event_type = ANY(CAST(:left_kinds AS text[]))) THEN 'sent'
            WHEN s.email IS NOT NULL THEN 'suppressed'
            ELSE 'processing'
        END AS outcome,
        s.reason AS why
    FROM messages m
    JOIN plans p ON p.id = CAST(:plan AS uuid)
    LEFT JOIN suppressions s ON s.email = m.email
    WHERE {plan} AND {where}
      AND (m.status = 'created' OR (m.status = 'processing' AND m.lease_until < now()))
      AND p.state = {ready} AND (p.start_at IS NULL OR p.start_at <= now()) AND {zone_open}
    ORDER BY m.id
    LIMIT :limit
    FOR UPDATE OF m SKIP LOCKED
)
UPDATE messages m SET
    status = c.outcome,
    lease_owner = CASE WHEN c.outcome = 'processing' THEN :owner END,
    lease_until = CASE WHEN c.outcome = 'processing' THEN now() + make_interval(secs => :lease) END,
    attempts = m.attempts + CASE WHEN c.outcome = 'processing' THEN 1 ELSE 0 END,
    sent_at = CASE WHEN c.outcome = 'sent' THEN now() ELSE m.sent_at END,
    reason = CASE WHEN c.outcome = 'suppressed' THEN CAST(:supp AS text) || c.why ELSE m.reason END,
    updated_at = now()
FROM c WHERE m.id = c.id
RETURNING m.id, m.email, m.name, m.vars, m.attempts, m.bucket, c.old_status, c.outcome, m.reason
"""
_READY = shared.state_sql(PlanState.READY)  # only a ready plan's rows are claimed
CLAIM_IDS = text(
    _CLAIM_SQL.format(
        plan="(m.plan_id = :plan) IS TRUE",
        where="m.id = ANY(CAST(:ids AS bigint[]))",
        ready=_READY,
        zone_open=shared.ZONE_OPEN,
    )
)
_CLAIM_ORPHANS = text(
    _CLAIM_SQL.format(
        ready=_READY,
        plan="m.plan_id = :plan",
        where="((m.status = 'processing') OR (m.status = 'created' AND (m.enqueued OR m.bucket < :below) "
        "AND m.updated_at < now() - make_interval(secs => :stale)))",
        zone_open=shared.ZONE_OPEN,
    )
)


async def _claim(engine: AsyncEngine, plan_id: uuid.UUID, sql: Any, params: dict[str, Any]) -> list[Claimed]:
    async with engine.begin() as conn:
        rows = (
            (
                await conn.execute(
                    sql,
                    {
                        "plan": plan_id,
                        "left_kinds": list(LEFT_SES_EVENTS),
                        "supp": SUPPRESSED_PREFIX,
                        **params,
                    },
                )
            )
            .mappings()
            .all()
        )
        moved = Counter((r["old_status"], r["outcome"]) for r in rows)
        from_created = sum(n for (old, _), n in moved.items() if old == "created")
        from_processing = sum(n for (old, new), n in moved.items() if old == "processing" and new != old)
        closed = Counter(r["outcome"] for r in rows if r["outcome"] != "processing")
        await shared.bump(
            conn,
            plan_id,
            {
                "created": -from_created,
                "processing": moved[("created", "processing")] - from_processing,
                "suppressed": closed["suppressed"],
                "sent": closed["sent"],
            },
        )
        await shared.bump_reasons(conn, plan_id, (r["reason"] for r in rows if r["outcome"] == "suppressed"))
        if closed:
            await _maybe_done(conn, plan_id)
    return [
        Claimed(
            id=r["id"],
            email=r["email"],
            name=r["name"],
            vars=dict(r["vars"] or {}),
            attempts=r["attempts"],
            bucket=r["bucket"],
        )
        for r in rows
        if r["outcome"] == "processing"
    ]


async def claim(
    engine: AsyncEngine, plan_id: uuid.UUID, ids: Sequence[int], owner: str, lease_seconds: float
) -> list[Claimed]:
    """Take the given ids under a lease for ``owner`` (atomic; ids others hold are skipped).

    Only ``created`` messages or ones whose lease expired are taken, and only
    while the plan is ``ready`` and past ``start_at``. Addresses suppressed since
    upload become ``suppressed`` here instead of being returned.
    """
    if not ids:
        return []
    return await _claim(
        engine,
        plan_id,
        CLAIM_IDS,
        {"ids": list(ids), "owner": owner, "lease": lease_seconds, "limit": len(ids)},
    )


async def claim_orphans(
    engine: AsyncEngine,
    plan_id: uuid.UUID,
    owner: str,
    lease_seconds: float,
    limit: int,
    stale_seconds: float,
    released_below: int,
) -> list[Claimed]:
    """Take messages whose queue work was lost: expired leases, and released rows idle ``stale_seconds``.

    SQS redelivers work after a crash, but a message that went to the DLQ or was
    purged, or a released row that never reached the queue (the API died while
    queueing a long list; nobody uploads a loaded list again), would otherwise stay
    ``created`` forever; the ledger is the truth. ``released_below`` is the cutoff of
    the plan's released share (``cohorts.cutoff``): unreleased rows wait, unqueued.
    """
    return await _claim(
        engine,
        plan_id,
        _CLAIM_ORPHANS,
        {
            "owner": owner,
            "lease": lease_seconds,
            "limit": limit,
            "stale": stale_seconds,
            "below": released_below,
        },
    )


# A row taken off the queue (its zone's window closed, its variant undecided) is not waiting for
# this work: the SQS message goes, and the row is queued again when it may be sent.
STILL_CREATED = (
    "SELECT id FROM messages WHERE (plan_id = :p) IS TRUE AND id = ANY(CAST(:ids AS bigint[])) "
    "AND (status = 'created' AND enqueued) IS TRUE"  # by id: no index on the plan or the status
)


async def still_created(engine: AsyncEngine, plan_id: uuid.UUID, ids: Sequence[int]) -> list[int]:
    """Which of ``ids`` are still waiting to be claimed (a claim skipped them: plan not
    claimable yet, or rows locked by a concurrent claim); their queue work must stay."""
    return await _ids(engine, STILL_CREATED, {"p": plan_id, "ids": list(ids)}, write=False)


async def _ids(engine: AsyncEngine, sql: str, params: dict[str, Any], *, write: bool) -> list[int]:
    """Run one statement over ``params["ids"]`` that answers message ids (no ids: no round trip)."""
    if not params["ids"]:
        return []
    async with engine.begin() if write else engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).scalars())


RELEASE = text(
    "UPDATE messages SET "  # noqa: S608 - the plan state is formatted from PlanState
    f"status = CASE WHEN p.state = {shared.state_sql(PlanState.STOPPED)} THEN 'stopped' ELSE 'created' END, "
    "lease_owner = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0), "
    "enqueued = enqueued AND NOT :unqueue, updated_at = now() FROM plans p "
    "WHERE p.id = messages.plan_id AND (messages.plan_id = :p) IS TRUE "
    "AND messages.id = ANY(CAST(:ids AS bigint[])) "
    "AND (messages.status = 'processing' AND messages.lease_owner = :o) IS TRUE "  # by id, not status
    "RETURNING messages.status"
)


async def release(
    engine: AsyncEngine, plan_id: uuid.UUID, ids: Sequence[int], owner: str, *, unqueue: bool = False
) -> int:
    """Give back messages this worker holds but did not send (shutdown, suspend).

    They become ``created`` again, or ``stopped`` if the plan was stopped meanwhile
    (``stop_plan`` leaves messages under a live lease to their holder). With ``unqueue``
    they also leave the work queue (``enqueued = false``): a row whose A/B variant is not
    decided yet waits, unclaimed even by the orphan sweep, until a plan update queues it.
    """
    if not ids:
        return 0
    async with engine.begin() as conn:
        statuses = (
            (
                await conn.execute(
                    RELEASE,
                    {"ids": list(ids), "o": owner, "p": plan_id, "unqueue": unqueue},
                )
            )
            .scalars()
            .all()
        )
        by_status = Counter(statuses)
        await shared.bump(
            conn,
            plan_id,
            {"processing": -len(statuses), "created": by_status["created"], "stopped": by_status["stopped"]},
        )
    return len(statuses)


async def expire_slot(engine: AsyncEngine, plan_id: uuid.UUID, slot: str, owner: str) -> int:
    """Expire the leases of this worker slot's earlier processes (owners starting with
    ``slot``); returns how many. Only a dead process leaves them: a pod's container and a
    supervisor's child slot each run one process at a time. The orphan sweep then reclaims
    them at once, instead of a whole lease later, with its usual care (an event proves a
    send; a suppressed address is not sent)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "UPDATE messages SET lease_until = now() - interval '1 second' "
                "WHERE plan_id = :p AND status = 'processing' AND starts_with(lease_owner, :slot) "
                "AND lease_owner <> :o AND lease_until >= now()"
            ),
            {"p": plan_id, "slot": slot, "o": owner},
        )
    return result.rowcount


async def extend_lease(
    engine: AsyncEngine, ids: Sequence[int], owner: str, lease_seconds: float
) -> list[int]:
    """Renew the lease on messages this worker holds (the heartbeat); returns the ids it still holds.

    An id missing from the answer was taken over (its lease ran out during an outage and
    another pod reclaimed it) or finished elsewhere: the worker must drop it unsent.
    """
    return await _ids(
        engine,
        "UPDATE messages SET lease_until = now() + make_interval(secs => :l) "
        "WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'processing' AND lease_owner = :o RETURNING id",
        {"ids": list(ids), "o": owner, "l": lease_seconds},
        write=True,
    )

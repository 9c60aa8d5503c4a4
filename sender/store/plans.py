"""Plans in the ledger: create, read, describe, stop and count them.

The other ledger modules (``loading``, ``claims``, ``sendresults``, ``pacing``) read a plan's
row and counters through the helpers here, so what a plan looks like is stated once.

Rules that hold for every ledger module:

* a message changes status only inside a transaction that also updates
  ``plan_counters``, so counts are exact and cheap to read;
* many-row writes are single statements over arrays (1000+ rows each);
* a worker owns a message only while its lease runs; an expired lease is
  reclaimed by anyone, so a crashed pod loses nothing;
* a suppressed address is refused on insert *and* re-checked at claim time.

All functions take an ``AsyncEngine`` and open their own short transaction.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.contract import plans as contract
from emailplan.contract.cohorts import BUCKETS, cutoff
from emailplan.contract.plans import LoadJob, PlanState
from emailplan.sender.models import COUNTER_COLUMNS
from emailplan.sender.store import shared


class PlanNotFoundError(LookupError):
    """No plan with this id (the API answers 404)."""


class PlanClosedError(RuntimeError):
    """The plan is stopped or done and takes no more recipients (the API answers 409)."""


class QueueSink(Protocol):
    """What the ledger needs from the work queue (``workqueue.WorkQueue`` implements it)."""

    async def enqueue(self, plan_id: uuid.UUID, batches: Sequence[Sequence[int]]) -> None: ...

    async def purge(self, plan_id: uuid.UUID) -> None: ...


@dataclass
class LedgerPlan:
    """A plan's ledger row as the worker reads it (the API answers with ``contract.PlanView``)."""

    id: uuid.UUID
    name: str
    namespace: str
    spec: dict[str, Any]
    rate_per_second: float
    start_at: datetime | None
    state: str
    recipients_complete: bool
    created_at: datetime
    updated_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    release_percent: float = contract.ALL_RELEASED

    @property
    def released_below(self) -> int:
        """The bucket cutoff of the released share: rows below it may be sent."""
        return cutoff(self.release_percent)


# --------------------------------------------------------------------------- helpers


async def _counts(conn: AsyncConnection, plan_id: uuid.UUID) -> dict[str, int]:
    row = (
        (await conn.execute(text("SELECT * FROM plan_counters WHERE plan_id = :plan"), {"plan": plan_id}))
        .mappings()
        .first()
    )
    if row is None:
        return {}
    return {k: int(row[k]) for k in COUNTER_COLUMNS}


def _view(row: Mapping[str, Any], counts: dict[str, int]) -> LedgerPlan:
    return LedgerPlan(
        id=row["id"],
        name=row["name"],
        namespace=row["namespace"],
        spec=dict(row["spec"] or {}),
        rate_per_second=float(row["rate_per_second"]),
        start_at=row["start_at"],
        state=row["state"],
        recipients_complete=bool(row["recipients_complete"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        counts=counts,
        release_percent=float(row["release_percent"]),
    )


_PLAN = text("SELECT * FROM plans WHERE id = :plan")
_PLAN_FOR_UPDATE = text("SELECT * FROM plans WHERE id = :plan FOR UPDATE")


async def _plan_row(conn: AsyncConnection, plan_id: uuid.UUID, lock: bool = False) -> Mapping[str, Any]:
    sql = _PLAN_FOR_UPDATE if lock else _PLAN
    row = (await conn.execute(sql, {"plan": plan_id})).mappings().first()
    if row is None:
        raise PlanNotFoundError(str(plan_id))
    return dict(row)


async def _maybe_done(conn: AsyncConnection, plan_id: uuid.UUID) -> None:
    """The one place "finished" is decided: a complete list with nothing created or processing is ``done``.

    A suspended plan whose last messages were sent by the pods that held them is
    finished too (nothing is left to resume); the operator and the workers read
    the state, they do not decide it again.
    """
    await conn.execute(
        text(
            f"UPDATE plans p SET state = {shared.state_sql(PlanState.DONE)}, updated_at = now() "  # noqa: S608
            f"FROM plan_counters c WHERE p.id = :p AND c.plan_id = p.id AND {shared.done_when('c')}"
        ),
        {"p": plan_id},
    )


# --------------------------------------------------------------------------- plans


# One statement: a new plan starts ``loading`` (or ``suspended``); an existing one keeps a final
# state and otherwise takes the one its suspension and list completeness give. ``xmax = 0``
# tells a fresh insert from an update. The released share is only raised here while the list
# is incomplete (nothing is queued yet); for a complete list ``release_share`` raises it once
# the newly released rows are queued.
_SUSPENDED, _LOADING, _READY = (
    shared.state_sql(s) for s in (PlanState.SUSPENDED, PlanState.LOADING, PlanState.READY)
)
_FINISHED = shared.state_sql(*(s for s in PlanState if s.finished))
_UPSERT_PLAN = text(
    f"""
    INSERT INTO plans (id, name, namespace, spec, rate_per_second, start_at, state, release_percent,
                       open_zones, bucketed)
    VALUES (:id, :name, :ns, CAST(:spec AS jsonb), :rate, :start,
            CASE WHEN CAST(:suspended AS boolean) THEN {_SUSPENDED} ELSE {_LOADING} END, :release,
            CAST(:zones AS text[]), :splits)
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, namespace = excluded.namespace, spec = excluded.spec,
        open_zones = excluded.open_zones, bucketed = plans.bucketed OR excluded.bucketed,
        rate_per_second = excluded.rate_per_second, start_at = excluded.start_at, updated_at = now(),
        release_percent = CASE WHEN plans.recipients_complete THEN plans.release_percent
                               ELSE greatest(plans.release_percent, excluded.release_percent) END,
        state = CASE WHEN plans.state IN {_FINISHED} THEN plans.state
                     WHEN CAST(:suspended AS boolean) THEN {_SUSPENDED}
                     WHEN plans.recipients_complete THEN {_READY} ELSE {_LOADING} END
    RETURNING (xmax = 0) AS created
    """  # noqa: S608 - plan states formatted from PlanState
)


_UNQUEUE_CLOSED_SQL = """
    UPDATE messages m SET enqueued = false, updated_at = now() FROM plans p
    WHERE p.id = m.plan_id AND m.plan_id = :p AND m.status = 'created' AND m.enqueued AND NOT {zone_open}
    """
_UNQUEUE_CLOSED = text(_UNQUEUE_CLOSED_SQL.format(zone_open=shared.ZONE_OPEN))
_RELEASED_BACKLOG = shared.by_bucket(
    """
    SELECT count(*) FROM messages m JOIN plans p ON p.id = m.plan_id
    WHERE m.plan_id = :p AND m.bucket < :below {bucketed} AND m.status IN ('created', 'processing')
      AND {zone_open}
    """,
    zone_open=shared.ZONE_OPEN,
)
# A plan that becomes bucketed (an A/B test added after its list was stored): its rows join
# the bucket index, so every read by bucket finds them (migration 0013).
_MARK_BUCKETED = text("UPDATE messages SET bucketed = true WHERE plan_id = :p AND NOT bucketed")
_LOCK_BUCKETED = text("SELECT bucketed FROM plans WHERE id = :p FOR UPDATE")


def splits(release_percent: float, spec: Mapping[str, Any]) -> bool:
    """Whether a plan splits its list by cohort bucket (a share held back, or A/B variants):
    from then on its rows are in the bucket index."""
    return release_percent < contract.ALL_RELEASED or bool(spec.get("variants"))


async def upsert_plan(
    engine: AsyncEngine,
    plan_id: uuid.UUID,
    *,
    name: str,
    namespace: str,
    spec: dict[str, Any],
    rate_per_second: float = contract.DEFAULT_RATE_PER_SECOND,
    start_at: datetime | None = None,
    suspended: bool = False,
    release_percent: float = contract.ALL_RELEASED,
    open_zones: Sequence[str] | None = None,
) -> tuple[LedgerPlan, bool]:
    """Create the plan or update it (idempotent PUT by EmailPlan uid); returns (view, created).

    ``spec`` is the sending spec in camelCase (from, replyTo, subject, html, text,
    tracking, unsubscribe, ses). ``suspended`` toggles ``suspended`` ↔ the state the
    plan would otherwise have (``loading`` until the list is complete, then ``ready``);
    a stopped or done plan keeps its state. ``open_zones`` (local-time delivery) are the
    zones whose window is open: in the same transaction, waiting rows of every other zone
    leave the work queue (a claim would skip them; they are queued again when their zone
    opens, by the enqueue path every PUT runs).
    """
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    split = splits(release_percent, spec)
    async with engine.begin() as conn:
        # A plan that splits: the lock waits for a load's batch in flight (it holds the plan
        # with KEY SHARE), so every row stored after this reads the new flag and every row
        # stored before it is marked below.
        was_bucketed = (await conn.execute(_LOCK_BUCKETED, {"p": plan_id})).scalar() if split else None
        created = (
            await conn.execute(
                _UPSERT_PLAN,
                {
                    "id": plan_id,
                    "name": name,
                    "ns": namespace,
                    "spec": json.dumps(spec),
                    "rate": rate_per_second,
                    "start": start_at,
                    "suspended": suspended,
                    "release": release_percent,
                    "zones": None if open_zones is None else sorted(open_zones),
                    "splits": split,
                },
            )
        ).scalar_one()
        if was_bucketed is False:
            await conn.execute(_MARK_BUCKETED, {"p": plan_id})
        if open_zones is not None:
            await conn.execute(_UNQUEUE_CLOSED, {"p": plan_id})
        await conn.execute(
            text("INSERT INTO plan_counters (plan_id) VALUES (:p) ON CONFLICT DO NOTHING"), {"p": plan_id}
        )
        row = await _plan_row(conn, plan_id)
        return _view(row, await _counts(conn, plan_id)), created


async def get_plan(engine: AsyncEngine, plan_id: uuid.UUID) -> LedgerPlan | None:
    """The plan with its counts, or None."""
    async with engine.connect() as conn:
        try:
            row = await _plan_row(conn, plan_id)
        except PlanNotFoundError:
            return None
        return _view(row, await _counts(conn, plan_id))


async def describe_plan(engine: AsyncEngine, plan_id: uuid.UUID) -> contract.PlanView | None:
    """The plan view of the API (contract model): registered plan, state, counts and load job."""
    async with engine.connect() as conn:
        try:
            row = await _plan_row(conn, plan_id)
        except PlanNotFoundError:
            return None
        counts = await _counts(conn, plan_id)
        load = await _load(conn, plan_id)
        spec = dict(row["spec"] or {})
        release = float(row["release_percent"])
        zones = row["open_zones"]
        bucketed = bool(row["bucketed"])
        backlog = await _released_backlog(
            conn, plan_id, release, counts, gated=zones is not None, bucketed=bucketed
        )
        zone_backlog = None if zones is None else await _zone_backlog(conn, plan_id)
        variants = await _variant_counts(conn, plan_id, spec, bucketed=bucketed)
        failures = await top_failure_reasons(conn, plan_id)
    return contract.PlanView.model_validate(
        {
            **spec,
            "id": row["id"],
            "name": row["name"],
            "namespace": row["namespace"],
            "ratePerSecond": float(row["rate_per_second"]),
            "startAt": row["start_at"],
            "suspended": row["state"] == PlanState.SUSPENDED,
            "state": row["state"],
            "recipientsLoaded": bool(row["recipients_complete"]),
            "releasePercent": release,
            "retryGeneration": int(row["retry_generation"]),
            "counts": counts,
            "load": load,
            "releasedBacklog": backlog,
            "openZones": None if zones is None else list(zones),
            "zoneBacklog": zone_backlog,
            "variantCounts": variants,
            "failures": failures,
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
        }
    )


async def top_failure_reasons(
    conn: AsyncConnection, plan_id: uuid.UUID, limit: int = contract.TOP_FAILURE_REASONS
) -> list[contract.FailureReason]:
    """The plan's most frequent failure (and suppression) reasons, most frequent first."""
    rows = await conn.execute(
        text(
            "SELECT reason, count FROM plan_failure_reasons WHERE plan_id = :p AND count > 0 "
            "ORDER BY count DESC, reason LIMIT :n"
        ),
        {"p": plan_id, "n": limit},
    )
    return [contract.FailureReason(reason=reason, count=int(n)) for reason, n in rows]


async def _zone_backlog(conn: AsyncConnection, plan_id: uuid.UUID) -> dict[str, int]:
    """Rows still to send per recipient zone ("" = none): what the operator judges windows for."""
    rows = await conn.execute(
        text(
            "SELECT coalesce(time_zone, '') AS zone, count(*) FROM messages "
            "WHERE plan_id = :p AND status IN ('created', 'processing') GROUP BY 1"
        ),
        {"p": plan_id},
    )
    return {zone: int(n) for zone, n in rows}


async def _released_backlog(
    conn: AsyncConnection,
    plan_id: uuid.UUID,
    release_percent: float,
    counts: Mapping[str, int],
    *,
    gated: bool = False,
    bucketed: bool = False,
) -> int:
    """Messages of the released share still to send (waiting or claimed): what pods are needed for.

    ``gated`` (local-time delivery): only rows whose zone's window is open count. ``bucketed``:
    the plan's flag (its rows are in the bucket index).
    """
    below = cutoff(release_percent)
    if below >= BUCKETS and not gated:
        return int(counts.get("created", 0)) + int(counts.get("processing", 0))
    if below <= 0:
        return 0
    return int(
        (
            await conn.execute(
                _RELEASED_BACKLOG[bucketed],
                {"p": plan_id, "below": below},
            )
        ).scalar_one()
    )


# Per-variant counts over the A/B test cohort, one pass on the (plan_id, bucket) index; the
# variant of a row is ``bucket % n`` (``emailplan.contract.cohorts``). ``opened_at`` is set for
# human opens only (machine opens are counted apart), so ``opened`` is unique human opens.
_VARIANT_COUNTS = shared.by_bucket(
    """
    SELECT m.bucket % :n AS variant, count(*) AS recipients,
           count(*) FILTER (WHERE m.status = 'sent') AS sent, count(m.delivered_at) AS delivered,
           count(m.opened_at) AS opened, count(m.clicked_at) AS clicked, count(m.bounced_at) AS bounced,
           count(m.complained_at) AS complained
    FROM messages m WHERE m.plan_id = :p AND m.bucket < :below {bucketed} GROUP BY 1
    """
)


async def _variant_counts(
    conn: AsyncConnection, plan_id: uuid.UUID, spec: Mapping[str, Any], *, bucketed: bool
) -> list[contract.VariantCounts]:
    """Each variant's counts over the test cohort, in the plan's order (none without variants)."""
    names = [str(v.get("name")) for v in spec.get("variants") or []]
    if not names:
        return []
    rows = (
        await conn.execute(
            _VARIANT_COUNTS[bucketed],
            {"p": plan_id, "n": len(names), "below": cutoff(float(spec.get("testPercent") or 0))},
        )
    ).mappings()
    by_index = {int(r["variant"]): r for r in rows}
    return [
        contract.VariantCounts.model_validate(
            {**{k: int(v) for k, v in by_index.get(i, {}).items() if k != "variant"}, "name": name}
        )
        for i, name in enumerate(names)
    ]


async def variant_counts(engine: AsyncEngine, plan_id: uuid.UUID) -> list[contract.VariantCounts]:
    """The plan's per-variant counts over its test cohort (empty without variants)."""
    async with engine.connect() as conn:
        row = await _plan_row(conn, plan_id)
        return await _variant_counts(conn, plan_id, dict(row["spec"] or {}), bucketed=bool(row["bucketed"]))


async def set_rate(engine: AsyncEngine, plan_id: uuid.UUID, rate_per_second: float) -> None:
    """Change the plan's total rate; running workers pick it up on their next token grant."""
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    async with engine.begin() as conn:
        result = await conn.execute(
            text("UPDATE plans SET rate_per_second = :r, updated_at = now() WHERE id = :p"),
            {"r": rate_per_second, "p": plan_id},
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise PlanNotFoundError(str(plan_id))


async def stop_plan(engine: AsyncEngine, plan_id: uuid.UUID, queue: QueueSink | None = None) -> LedgerPlan:
    """Stop for good: every message not sent yet becomes ``stopped`` and the queue is purged.

    Every row that is not final becomes ``stopped``, leased or not: a lease may belong
    to a pod that died a moment ago, and nobody can tell yet. A send that was in flight
    still reaches the ledger: ``record_results`` turns a stopped row into ``sent`` when
    its late result arrives, so the sums hold either way.
    """
    async with engine.begin() as conn:
        row = await _plan_row(conn, plan_id, lock=True)
        if row["state"] != PlanState.DONE:
            await conn.execute(
                text("UPDATE plans SET state = :s, updated_at = now() WHERE id = :p"),
                {"p": plan_id, "s": PlanState.STOPPED.value},
            )
        moved = (
            (
                await conn.execute(
                    text(
                        "WITH m AS (SELECT id, status FROM messages WHERE plan_id = :p "
                        "AND status IN ('created', 'processing') "
                        "FOR UPDATE) "
                        "UPDATE messages SET status = 'stopped', lease_owner = NULL, lease_until = NULL, "
                        "updated_at = now() FROM m WHERE messages.id = m.id RETURNING m.status"
                    ),
                    {"p": plan_id},
                )
            )
            .scalars()
            .all()
        )
        before = Counter(moved)
        await shared.bump(
            conn,
            plan_id,
            {"created": -before["created"], "processing": -before["processing"], "stopped": len(moved)},
        )
        view = _view(await _plan_row(conn, plan_id), await _counts(conn, plan_id))
    if queue is not None:
        await queue.purge(plan_id)
    return view


async def get_counts(engine: AsyncEngine, plan_id: uuid.UUID) -> dict[str, int] | None:
    """The plan's counters (one primary-key read), or None for an unknown plan."""
    async with engine.connect() as conn:
        counts = await _counts(conn, plan_id)
        return counts or None


async def sent_in_last_hours(engine: AsyncEngine, hours: float, plan_id: uuid.UUID | None = None) -> int:
    """How many messages were sent in the last ``hours`` (all plans, or one)."""
    sql = "SELECT count(*) FROM messages WHERE sent_at >= now() - make_interval(secs => :s)"
    params: dict[str, Any] = {"s": hours * 3600.0}
    if plan_id is not None:
        sql += " AND plan_id = :p"
        params["p"] = plan_id
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


# --------------------------------------------------------------------------- recipients


async def _load(conn: AsyncConnection, plan_id: uuid.UUID) -> LoadJob | None:
    row = (
        await conn.execute(
            text("SELECT job, updated_at FROM recipient_loads WHERE plan_id = :p"), {"p": plan_id}
        )
    ).first()
    if row is None:
        return None
    return LoadJob.model_validate({**row[0], "updatedAt": row[1]})


async def plan_for_worker(engine: AsyncEngine, plan_id: uuid.UUID) -> LedgerPlan | None:
    """The plan row as the worker polls it (spec, rate, state), without counters."""
    async with engine.connect() as conn:
        try:
            return _view(await _plan_row(conn, plan_id), {})
        except PlanNotFoundError:
            return None

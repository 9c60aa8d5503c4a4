"""The ledger: every read and write of plans, recipients and message statuses.

The API (plan administration, uploads, stats) and the worker (claims, results,
rate budget) both go through these functions, so the rules live in one place:

* a message changes status only inside a transaction that also updates
  ``plan_counters``, so counts are exact and cheap to read;
* many-row writes are single statements over arrays (1000+ rows each);
* a worker owns a message only while its lease runs; an expired lease is
  reclaimed by anyone, so a crashed pod loses nothing;
* a suppressed address is refused on insert *and* re-checked at claim time.

All functions take an ``AsyncEngine`` and open their own short transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.contract import plans as contract
from emailplan.contract.cohorts import BUCKETS, cutoff
from emailplan.contract.failures import failure_reason
from emailplan.contract.plans import SUPPRESSED_PREFIX, LoadJob, LoadResult, PlanState, RowProblem
from emailplan.contract.recipients import Recipient, Row, RowError, validate_row
from emailplan.sender.models import COUNTER_COLUMNS
from emailplan.sender.store import shared

INSERT_BATCH = 5000
ENQUEUE_CHUNK = 10_000
# Ids per SQS work message. Bigger messages are fewer receives, claims and deletes per email,
# but a receive takes whole messages: with 500 a pod claimed 500 rows whatever its room (about a
# second of the plan's rate), a starved pod could not send them within its lease, another pod
# took them over, and what the first had in flight was sent twice (the demo, 14 of 2,992).
# 100 keeps what a pod holds near its backlog limit. One definition (the operator's backlog per replica).
IDS_PER_QUEUE_MESSAGE = contract.IDS_PER_QUEUE_MESSAGE
# What ``insert_recipients`` takes: rows of the recipient reader, or (row number, parsed row) pairs.
RowInput = Row | tuple[int, Mapping[str, Any] | RowError]


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


@dataclass(frozen=True)
class Claimed:
    """A message this worker now holds under lease, with what it needs to render it."""

    id: int
    email: str
    name: str | None
    vars: dict[str, Any]
    attempts: int
    bucket: int  # the recipient's cohort bucket: which A/B variant it receives


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send, written back in a batch by ``record_results``."""

    id: int
    status: str  # "sent" | "failed"
    ses_message_id: str | None = None
    error: str | None = None
    at: datetime | None = None  # when SES answered (results are written later, in batches)


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
            "UPDATE plans p SET state = 'done', updated_at = now() FROM plan_counters c "
            "WHERE p.id = :p AND c.plan_id = p.id AND p.state IN ('ready', 'suspended') "
            "AND p.recipients_complete AND c.created = 0 AND c.processing = 0"
        ),
        {"p": plan_id},
    )


# --------------------------------------------------------------------------- plans


# One statement: a new plan starts ``loading`` (or ``suspended``); an existing one keeps a final
# state and otherwise takes the one its suspension and list completeness give. ``xmax = 0``
# tells a fresh insert from an update. The released share is only raised here while the list
# is incomplete (nothing is queued yet); for a complete list ``release_share`` raises it once
# the newly released rows are queued.
_UPSERT_PLAN = text(
    """
    INSERT INTO plans (id, name, namespace, spec, rate_per_second, start_at, state, release_percent)
    VALUES (:id, :name, :ns, CAST(:spec AS jsonb), :rate, :start,
            CASE WHEN CAST(:suspended AS boolean) THEN 'suspended' ELSE 'loading' END, :release)
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, namespace = excluded.namespace, spec = excluded.spec,
        rate_per_second = excluded.rate_per_second, start_at = excluded.start_at, updated_at = now(),
        release_percent = CASE WHEN plans.recipients_complete THEN plans.release_percent
                               ELSE greatest(plans.release_percent, excluded.release_percent) END,
        state = CASE WHEN plans.state IN ('stopped', 'done') THEN plans.state
                     WHEN CAST(:suspended AS boolean) THEN 'suspended'
                     WHEN plans.recipients_complete THEN 'ready' ELSE 'loading' END
    RETURNING (xmax = 0) AS created
    """
)


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
) -> tuple[LedgerPlan, bool]:
    """Create the plan or update it (idempotent PUT by EmailPlan uid); returns (view, created).

    ``spec`` is the sending spec in camelCase (from, replyTo, subject, html, text,
    tracking, unsubscribe, ses). ``suspended`` toggles ``suspended`` ↔ the state the
    plan would otherwise have (``loading`` until the list is complete, then ``ready``);
    a stopped or done plan keeps its state.
    """
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    async with engine.begin() as conn:
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
                },
            )
        ).scalar_one()
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
        backlog = await _released_backlog(conn, plan_id, release, counts)
        variants = await _variant_counts(conn, plan_id, spec)
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
            "counts": counts,
            "load": load,
            "releasedBacklog": backlog,
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


async def _released_backlog(
    conn: AsyncConnection, plan_id: uuid.UUID, release_percent: float, counts: Mapping[str, int]
) -> int:
    """Messages of the released share still to send (waiting or claimed): what pods are needed for."""
    below = cutoff(release_percent)
    if below >= BUCKETS:
        return int(counts.get("created", 0)) + int(counts.get("processing", 0))
    if below <= 0:
        return 0
    return int(
        (
            await conn.execute(
                text(
                    "SELECT count(*) FROM messages WHERE plan_id = :p AND bucket < :below "
                    "AND status IN ('created', 'processing')"
                ),
                {"p": plan_id, "below": below},
            )
        ).scalar_one()
    )


# Per-variant counts over the A/B test cohort, one pass on the (plan_id, bucket) index; the
# variant of a row is ``bucket % n`` (``emailplan.contract.cohorts``). ``opened_at`` is set for
# human opens only (machine opens are counted apart), so ``opened`` is unique human opens.
_VARIANT_COUNTS = text(
    """
    SELECT bucket % :n AS variant, count(*) AS recipients,
           count(*) FILTER (WHERE status = 'sent') AS sent, count(delivered_at) AS delivered,
           count(opened_at) AS opened, count(clicked_at) AS clicked, count(bounced_at) AS bounced,
           count(complained_at) AS complained
    FROM messages WHERE plan_id = :p AND bucket < :below GROUP BY 1
    """
)


async def _variant_counts(
    conn: AsyncConnection, plan_id: uuid.UUID, spec: Mapping[str, Any]
) -> list[contract.VariantCounts]:
    """Each variant's counts over the test cohort, in the plan's order (none without variants)."""
    names = [str(v.get("name")) for v in spec.get("variants") or []]
    if not names:
        return []
    rows = (
        await conn.execute(
            _VARIANT_COUNTS,
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
        return await _variant_counts(conn, plan_id, dict(row["spec"] or {}))


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
                text("UPDATE plans SET state = 'stopped', updated_at = now() WHERE id = :p"), {"p": plan_id}
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


def _checked(item: RowInput) -> Row:
    if isinstance(item, tuple):
        row_no, data = item
        return data if isinstance(data, RowError) else validate_row(row_no, data)
    return item


async def insert_recipients(
    engine: AsyncEngine,
    plan_id: uuid.UUID,
    rows: Iterable[RowInput] | AsyncIterable[RowInput],
    *,
    batch_size: int = INSERT_BATCH,
) -> LoadResult:
    """Store recipient rows in big batches; refused rows and duplicates are counted apart.

    ``rows`` come from ``emailplan.contract.recipients.RecipientReader`` (already
    validated) or as ``(row_no, {email, name?, vars?})`` pairs, validated here.
    Each batch is one INSERT over arrays in its own transaction with the counter
    update. An address already in the plan (this upload or an earlier one) is a
    duplicate, so re-uploading the same rows adds nothing; a suppressed address
    is stored as ``suppressed`` and never sent.
    """
    async with engine.connect() as conn:
        row = await _plan_row(conn, plan_id)
    if row["state"] in (PlanState.STOPPED, PlanState.DONE):
        raise PlanClosedError(f"plan is {row['state']}")
    result = LoadResult()
    batch: dict[str, Recipient] = {}
    pending: asyncio.Task[None] | None = None

    async def flush() -> None:
        # One insert in flight while the next batch is validated: PostgreSQL and
        # Python work in parallel (about twice the throughput on two cores).
        nonlocal pending
        if pending is not None:
            await pending
            pending = None
        if batch:
            pending = asyncio.create_task(_insert_batch(engine, plan_id, list(batch.values()), result))
            batch.clear()

    def take(item: RowInput) -> bool:
        checked = _checked(item)
        if isinstance(checked, RowError):
            result.add_rejected(RowProblem(row=checked.row, field=checked.field, message=checked.message))
            return False
        first = batch.get(checked.email)
        if first is not None:
            result.add_duplicate(
                RowProblem(row=checked.row, field="email", message=f"duplicate of row {first.row}")
            )
            return False
        batch[checked.email] = checked
        return len(batch) >= batch_size

    if isinstance(rows, AsyncIterable):
        async for item in rows:
            if take(item):
                await flush()
    else:
        for item in rows:
            if take(item):
                await flush()
    await flush()
    await flush()
    return result


_INSERT_SQL = text(
    """
    WITH input AS (
        SELECT * FROM unnest(CAST(:rows AS int[]), CAST(:emails AS text[]), CAST(:names AS text[]),
                             CAST(:vars AS text[])) AS t(row_no, email, name, vars)
    ), ins AS (
        INSERT INTO messages (plan_id, row_no, email, name, vars, status, reason)
        SELECT CAST(:plan AS uuid), i.row_no, i.email, i.name, CAST(i.vars AS jsonb),
               CASE WHEN s.email IS NULL THEN 'created' ELSE 'suppressed' END,
               CAST(:supp AS text) || s.reason
        FROM input i LEFT JOIN suppressions s ON s.email = i.email
        ON CONFLICT (plan_id, email) DO NOTHING
        RETURNING row_no, status, reason
    )
    SELECT row_no, status, reason FROM ins
    """
)


async def _insert_batch(
    engine: AsyncEngine, plan_id: uuid.UUID, batch: list[Recipient], result: LoadResult
) -> None:
    params = {
        "plan": plan_id,
        "rows": [r.row for r in batch],
        "emails": [r.email for r in batch],
        "names": [r.name for r in batch],
        "vars": [r.vars_json for r in batch],
        "supp": SUPPRESSED_PREFIX,
    }
    async with engine.begin() as conn:
        inserted = (await conn.execute(_INSERT_SQL, params)).all()
        statuses = Counter(status for _, status, _ in inserted)
        await shared.bump(
            conn,
            plan_id,
            {"total": len(inserted), "created": statuses["created"], "suppressed": statuses["suppressed"]},
        )
        await shared.bump_reasons(conn, plan_id, (reason for _, _, reason in inserted))
    result.accepted += statuses["created"]
    result.suppressed += statuses["suppressed"]
    if len(inserted) < len(batch):
        stored = {row_no for row_no, _, _ in inserted}
        for r in batch:
            if r.row not in stored:
                result.add_duplicate(
                    RowProblem(row=r.row, field="email", message="address already in this plan")
                )


async def complete_recipients(engine: AsyncEngine, plan_id: uuid.UUID, queue: QueueSink) -> int:
    """Mark the list complete and put its released, not-yet-queued messages on the work queue.

    Idempotent (see ``_enqueue_released``); returns how many message ids this call enqueued.
    """
    async with engine.begin() as conn:
        row = await _plan_row(conn, plan_id, lock=True)
        state = PlanState.READY.value if row["state"] == PlanState.LOADING else row["state"]
        await conn.execute(
            text("UPDATE plans SET recipients_complete = true, state = :s, updated_at = now() WHERE id = :p"),
            {"s": state, "p": plan_id},
        )
    if PlanState(state).finished:
        return 0
    async with engine.begin() as conn:
        await _maybe_done(conn, plan_id)  # an empty or all-suppressed list is finished already
    return await _enqueue_released(engine, plan_id, queue, cutoff(float(row["release_percent"])))


async def release_share(engine: AsyncEngine, plan_id: uuid.UUID, percent: float, queue: QueueSink) -> int:
    """Release ``percent`` of a complete list (never less than before) and queue what that frees.

    The rows are queued *before* the higher share is recorded: a crash in between leaves
    the old share in the plan view, so the operator sends its PUT again and the rows
    still waiting are queued then (rows queued twice are harmless: the claim decides).
    Rows below the share that are not queued (a worker gave them back because their
    variant was undecided) are queued again by any call. Returns how many ids it enqueued.
    """
    async with engine.connect() as conn:
        row = await _plan_row(conn, plan_id)
    if not row["recipients_complete"] or row["state"] in (PlanState.STOPPED, PlanState.DONE):
        return 0
    percent = max(percent, float(row["release_percent"]))
    total = await _enqueue_released(engine, plan_id, queue, cutoff(percent))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE plans SET release_percent = greatest(release_percent, :r), updated_at = now() "
                "WHERE id = :p"
            ),
            {"r": percent, "p": plan_id},
        )
    return total


async def _enqueue_released(engine: AsyncEngine, plan_id: uuid.UUID, queue: QueueSink, below: int) -> int:
    """Put every waiting message whose bucket is below ``below`` on the work queue (the one enqueue path).

    Idempotent: only rows with ``enqueued = false`` are sent to SQS, and they are
    flagged after SQS accepted them; a crash in between re-enqueues a few ids,
    which is harmless because the ledger claim decides what is sent. Rows above the
    cutoff stay ``created`` and unqueued: nobody claims them (the orphan sweep takes
    only queued rows) and the plan is not done while they wait.
    """
    total = 0
    last_id = 0
    while below > 0:
        async with engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        text(
                            "SELECT id FROM messages WHERE plan_id = :p AND status = 'created' "
                            "AND NOT enqueued AND bucket < :below AND id > :last ORDER BY id LIMIT :n"
                        ),
                        {"p": plan_id, "below": below, "last": last_id, "n": ENQUEUE_CHUNK},
                    )
                ).scalars()
            )
        if not ids:
            break
        chunks = [ids[i : i + IDS_PER_QUEUE_MESSAGE] for i in range(0, len(ids), IDS_PER_QUEUE_MESSAGE)]
        await queue.enqueue(plan_id, chunks)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE messages SET enqueued = true, updated_at = now() "
                    "WHERE id = ANY(CAST(:ids AS bigint[]))"
                ),
                {"ids": ids},
            )
        total += len(ids)
        last_id = ids[-1]
    return total


async def reset_recipients(engine: AsyncEngine, plan_id: uuid.UUID) -> bool:
    """Forget the rows of a list that was never completed, so loading it again counts each row once.

    Before the list is complete nothing was queued or claimed, so every message
    is ``created`` or ``suppressed`` and may go; a complete list is kept (False).
    """
    async with engine.begin() as conn:
        row = await _plan_row(conn, plan_id, lock=True)
        if row["recipients_complete"]:
            return False
        await conn.execute(text("DELETE FROM messages WHERE plan_id = :p"), {"p": plan_id})
        await conn.execute(
            text("UPDATE plan_counters SET total = 0, created = 0, suppressed = 0 WHERE plan_id = :p"),
            {"p": plan_id},
        )
        await conn.execute(text("DELETE FROM plan_failure_reasons WHERE plan_id = :p"), {"p": plan_id})
    return True


_SAVE_LOAD = text(
    """
    INSERT INTO recipient_loads (plan_id, state, job, updated_at)
    VALUES (:p, :state, CAST(:job AS jsonb), now())
    ON CONFLICT (plan_id) DO UPDATE SET state = excluded.state, job = excluded.job, updated_at = now()
    RETURNING updated_at
    """
)


async def save_load(engine: AsyncEngine, plan_id: uuid.UUID, job: LoadJob) -> LoadJob:
    """Record the plan's load job (one per plan); the database clock stamps ``updatedAt``."""
    async with engine.begin() as conn:
        stamp = (
            await conn.execute(
                _SAVE_LOAD, {"p": plan_id, "state": job.state.value, "job": job.model_dump_json()}
            )
        ).scalar_one()
    return job.model_copy(update={"updated_at": stamp})


async def _load(conn: AsyncConnection, plan_id: uuid.UUID) -> LoadJob | None:
    row = (
        await conn.execute(
            text("SELECT job, updated_at FROM recipient_loads WHERE plan_id = :p"), {"p": plan_id}
        )
    ).first()
    if row is None:
        return None
    return LoadJob.model_validate({**row[0], "updatedAt": row[1]})


async def add_suppressions(
    engine: AsyncEngine, emails: Sequence[str], reason: str, plan_id: uuid.UUID | None = None
) -> int:
    """Suppress addresses for every plan (first reason wins); returns how many were new."""
    if not emails:
        return 0
    async with engine.begin() as conn:
        return await shared.insert_suppressions(conn, emails, reason, plan_id)


# --------------------------------------------------------------------------- worker side


# SES event kinds that prove a message left SES's door (``sesevents.Kind`` values).
LEFT_SES_EVENTS = ("send", "delivery", "bounce", "complaint", "delivery_delay", "open", "click")

# Statements that find rows by id check the plan with ``(m.plan_id = :p) IS TRUE``, not a bare
# ``m.plan_id = :p``: the bare form lets the planner answer "rows of this plan in status X"
# from the (plan_id, status) index instead of looking the ids up by primary key. With
# statistics taken before a list was loaded it estimates that at one row, and a write of 16
# results then read every created and processing row of the plan (70 ms a write, PostgreSQL
# at three times the worker's CPU per email in the throughput benchmark). ``IS TRUE`` is the
# same test for a non-null column, but no index can answer it, so the primary key is used.

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
    JOIN plans p ON p.id = m.plan_id
    LEFT JOIN suppressions s ON s.email = m.email
    WHERE {plan} AND {where}
      AND (m.status = 'created' OR (m.status = 'processing' AND m.lease_until < now()))
      AND p.state = 'ready' AND (p.start_at IS NULL OR p.start_at <= now())
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
CLAIM_IDS = text(
    _CLAIM_SQL.format(plan="(m.plan_id = :plan) IS TRUE", where="m.id = ANY(CAST(:ids AS bigint[]))")
)
_CLAIM_ORPHANS = text(
    _CLAIM_SQL.format(
        plan="m.plan_id = :plan",
        where="((m.status = 'processing') OR (m.status = 'created' AND (m.enqueued OR m.bucket < :below) "
        "AND m.updated_at < now() - make_interval(secs => :stale)))",
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


STILL_CREATED = (
    "SELECT id FROM messages WHERE (plan_id = :p) IS TRUE AND id = ANY(CAST(:ids AS bigint[])) "
    "AND status = 'created'"
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
    "UPDATE messages SET "
    "status = CASE WHEN p.state = 'stopped' THEN 'stopped' ELSE 'created' END, "
    "lease_owner = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0), "
    "enqueued = enqueued AND NOT :unqueue, updated_at = now() FROM plans p "
    "WHERE p.id = messages.plan_id AND (messages.plan_id = :p) IS TRUE "
    "AND messages.id = ANY(CAST(:ids AS bigint[])) AND messages.status = 'processing' "
    "AND messages.lease_owner = :o RETURNING messages.status"
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
        UPDATE plans p SET state = 'done', updated_at = now() FROM cnt
        WHERE p.id = :p AND p.state IN ('ready', 'suspended') AND p.recipients_complete
            AND cnt.created = 0 AND cnt.processing = 0
        RETURNING 1
    )
    SELECT (SELECT n FROM d), (SELECT count(*) FROM why), (SELECT count(*) FROM done)
    """
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


# One statement, one round trip: lock the bucket rows (account first, by key), refill them
# (``ratelimit.refill``: rate * elapsed, capped at the burst, a debt forgiven), add back what
# the caller returns unused, grant whole tokens up to the smallest bucket, write both rows.
# The rows stay locked only for the statement itself, so pods never queue behind each
# other's network round trips (the old four-statement transaction held the lock across
# them, which is what cost 5-30 % of the rate with 2-4 pods on a busy machine).
_TAKE_TOKENS = text(
    """
    WITH p AS (SELECT rate_per_second AS rate FROM plans WHERE id = :plan),
    b AS (
        SELECT k.key, k.tokens, k.updated_at,
               CASE WHEN k.key = 'account' THEN CAST(:arate AS float8) ELSE (SELECT rate FROM p) END AS rate
        FROM rate_buckets k WHERE k.key = ANY(CAST(:keys AS text[]))
        ORDER BY k.key FOR UPDATE
    ),
    r AS (
        SELECT key, least(greatest(1.0, rate * :burst),
                          greatest(0.0, tokens) + greatest(0.0, rate) * greatest(0.0, age)
                          + CAST(:back AS float8)) AS avail
        FROM (SELECT *, CAST(extract(epoch FROM clock_timestamp() - updated_at) AS float8) AS age FROM b) aged
    ),
    g AS (SELECT greatest(0.0, floor(least(CAST(:want AS float8), min(avail)))) AS granted FROM r)
    UPDATE rate_buckets t SET tokens = r.avail - g.granted, updated_at = clock_timestamp()
    FROM r, g WHERE t.key = r.key
        AND (SELECT count(*) FROM r) = cardinality(CAST(:keys AS text[]))
        AND (SELECT rate FROM p) IS NOT NULL
    RETURNING g.granted, (SELECT rate FROM p) AS rate
    """
)


_ENSURE_BUCKETS = text(
    "INSERT INTO rate_buckets (key, tokens, updated_at) SELECT k, 0, clock_timestamp() "
    "FROM unnest(CAST(:k AS text[])) AS k ON CONFLICT (key) DO NOTHING"
)


async def take_tokens(
    engine: AsyncEngine,
    plan_id: uuid.UUID,
    want: float,
    *,
    account_rate: float | None,
    burst_seconds: float = 0.5,
    give_back: float = 0.0,
) -> tuple[float, float]:
    """Take up to ``want`` send tokens from the plan's shared bucket (and the account's).

    Returns ``(granted, plan_rate)``. The plan's bucket refills at the plan's
    current ``rate_per_second`` (read in the same statement, so a rate change
    is in effect at the next grant); the ``account`` bucket refills at
    ``account_rate`` so all plans together stay under SES MaxSendRate. Both rows
    are locked in a fixed order (account first) to avoid deadlocks.
    ``give_back`` returns tokens an earlier grant did not use to both buckets
    (never above their burst), so a worker can take generous grants without
    wasting the plan's rate.
    """
    keys = (["account"] if account_rate else []) + [f"plan:{plan_id}"]
    params = {
        "plan": plan_id,
        "keys": keys,
        "arate": float(account_rate or 0),
        "burst": burst_seconds,
        "back": max(0.0, float(int(give_back))),
        "want": max(0.0, want),
    }
    for _ in range(2):
        # Autocommit: the statement takes nothing unless every bucket row and the plan are there.
        async with shared.autocommit(engine) as conn:
            rows = (await conn.execute(_TAKE_TOKENS, params)).all()
        if len(rows) == len(keys):
            return float(rows[0][0]), float(rows[0][1])
        # First grant for this plan or the account (no bucket row yet), or no such plan.
        async with engine.begin() as conn:
            exists = (await conn.execute(text("SELECT 1 FROM plans WHERE id = :p"), {"p": plan_id})).first()
            if exists is None:
                raise PlanNotFoundError(str(plan_id))
            await conn.execute(_ENSURE_BUCKETS, {"k": keys})
    raise RuntimeError("rate bucket rows missing after creating them")


async def plan_for_worker(engine: AsyncEngine, plan_id: uuid.UUID) -> LedgerPlan | None:
    """The plan row as the worker polls it (spec, rate, state), without counters."""
    async with engine.connect() as conn:
        try:
            return _view(await _plan_row(conn, plan_id), {})
        except PlanNotFoundError:
            return None

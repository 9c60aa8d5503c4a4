"""Recipients into the ledger: insert, complete, release by share, reset, load jobs, suppressions.

A recipient row is inserted ``created`` (or ``suppressed``) and its id reaches the work
queue only once the list is complete and its cohort bucket is in the released share.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import Any, Final

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.contract import plans as contract
from emailplan.contract.cohorts import cutoff
from emailplan.contract.plans import SUPPRESSED_PREFIX, LoadJob, LoadResult, PlanState, RowProblem
from emailplan.contract.recipients import Recipient, Row, RowError, validate_row
from emailplan.sender.store import shared
from emailplan.sender.store.plans import PlanClosedError, PlanNotFoundError, QueueSink, _maybe_done, _plan_row

INSERT_BATCH = 5000
ENQUEUE_CHUNK = 10_000
# Rows validated between two turns of the event loop: without a turn the batch insert in flight
# (several round trips) waits for the whole next batch to be validated, and PostgreSQL and Python
# never work at the same time. Each round trip waits up to this many rows (about 1 ms); 100k rows
# loaded in 4.8-5.2 s with 10 or 20, 5.1-5.4 s with 50, 6.3-6.9 s with 250 (2026-12-07).
YIELD_EVERY = 20
# Ids per SQS work message. Bigger messages are fewer receives, claims and deletes per email,
# but a receive takes whole messages: with 500 a pod claimed 500 rows whatever its room (about a
# second of the plan's rate), a starved pod could not send them within its lease, another pod
# took them over, and what the first had in flight was sent twice (the demo, 14 of 2,992).
# 100 keeps what a pod holds near its backlog limit. One definition (the operator's backlog per replica).
IDS_PER_QUEUE_MESSAGE = contract.IDS_PER_QUEUE_MESSAGE
# What ``insert_recipients`` takes: rows of the recipient reader, or (row number, parsed row) pairs.
RowInput = Row | tuple[int, Mapping[str, Any] | RowError]


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
    account_suppressed: Mapping[str, str] | None = None,
) -> LoadResult:
    """Store recipient rows in big batches; refused rows and duplicates are counted apart.

    ``rows`` come from ``RecipientReader`` (validated) or as ``(row_no, {email, ...})``
    pairs, validated here. Each batch is stored in its own transaction with the counter
    update: by COPY until a batch meets an address the plan already has, then by an INSERT
    that skips such rows. An address already in the plan is a duplicate (re-uploading adds
    nothing); a suppressed address (ours, or in ``account_suppressed``: SES's account list
    by lower-cased address, with its reason) is stored ``suppressed`` and never sent.
    """
    async with engine.connect() as conn:
        row = await _plan_row(conn, plan_id)
    if row["state"] in (PlanState.STOPPED, PlanState.DONE):
        raise PlanClosedError(f"plan is {row['state']}")
    batches = _Batches(engine, plan_id, batch_size, account_suppressed)
    # ``take`` is a plain call: an awaited call per row cost a coroutine per row (a million-row load).
    if isinstance(rows, AsyncIterable):
        async for item in rows:
            if batches.take(item):
                await batches.turn()
    else:
        for item in rows:
            if batches.take(item):
                await batches.turn()
    await batches.finish()
    return batches.result


class _Batches:
    """Rows gathered into batches of distinct addresses, each inserted while the next one is
    validated: one insert in flight, so PostgreSQL and Python work at the same time."""

    def __init__(
        self, engine: AsyncEngine, plan_id: uuid.UUID, size: int, account: Mapping[str, str] | None
    ) -> None:
        self.engine, self.plan_id, self.size, self.account = engine, plan_id, size, account
        self.result = LoadResult()
        self.batch: dict[str, Recipient] = {}
        self.pending: asyncio.Task[bool] | None = None
        self.seen = 0
        self.copy_first = True  # until a batch meets an address the plan has (see _insert_batch)

    def take(self, item: RowInput) -> bool:
        """Validate a row into the batch; True when the event loop is due a turn (see :meth:`turn`)."""
        self.seen += 1
        checked, result = _checked(item), self.result
        if isinstance(checked, RowError):
            result.add_rejected(RowProblem(row=checked.row, field=checked.field, message=checked.message))
        else:
            first = self.batch.get(checked.email)
            if first is not None:
                result.add_duplicate(
                    RowProblem(row=checked.row, field="email", message=f"duplicate of row {first.row}")
                )
            else:
                self.batch[checked.email] = checked
        return len(self.batch) >= self.size or self.seen % YIELD_EVERY == 0

    async def turn(self) -> None:
        """A full batch starts its insert; otherwise the insert in flight takes its next round trip."""
        if len(self.batch) >= self.size:
            await self._flush()
        else:
            await asyncio.sleep(0)

    async def finish(self) -> None:
        """Insert the last, partial batch and wait for every insert."""
        await self._flush()
        await self._flush()

    async def _flush(self) -> None:
        if self.pending is not None:
            self.copy_first = await self.pending
            self.pending = None
        if self.batch:
            rows = [*self.batch.values()]
            self.pending = asyncio.create_task(
                _insert_batch(self.engine, self.plan_id, rows, self.result, self.account, self.copy_first)
            )
            self.batch.clear()


# One row as a batch stores it: a plain tuple in the order of ``_COLUMNS``, since a million-row
# load builds one per row (a NamedTuple cost five times as much to make).
_Stored = tuple[uuid.UUID, int, str, str | None, str, str, str | None, str | None, bool]
_COLUMNS = ("plan_id", "row_no", "email", "name", "vars", "status", "reason", "time_zone", "bucketed")
# The places of row_no, status and reason in _COLUMNS (the ledger tests of duplicates,
# suppressions and reasons fail if they drift).
_ROW_NO: Final = 1
_STATUS: Final = 5
_REASON: Final = 6


# Taken once per batch: a plan cannot be deleted under a load (the lock a foreign key's check
# took for every row, migration 0012), and a batch for a plan that is gone stores nothing. Its
# ``bucketed`` goes on every row: a plan that becomes bucketed waits for the lock (upsert_plan).
_HOLD_PLAN = text("SELECT bucketed FROM plans WHERE id = :p FOR KEY SHARE")
_SUPPRESSED = text("SELECT email, reason FROM suppressions WHERE email = ANY(CAST(:emails AS text[]))")
# The slow path: rows of the batch may be in the plan already (a duplicate beyond this batch, a
# second upload); those are skipped and reported.
_INSERT_SQL = text(
    """
    INSERT INTO messages (plan_id, row_no, email, name, vars, status, reason, time_zone, bucketed)
    SELECT CAST(:plan AS uuid), t.row_no, t.email, t.name, CAST(t.vars AS jsonb), t.status, t.reason, t.zone,
           CAST(:bucketed AS boolean)
    FROM unnest(CAST(:rows AS int[]), CAST(:emails AS text[]), CAST(:names AS text[]), CAST(:vars AS text[]),
                CAST(:statuses AS text[]), CAST(:reasons AS text[]), CAST(:zones AS text[]))
         AS t(row_no, email, name, vars, status, reason, zone)
    ON CONFLICT (plan_id, email) DO NOTHING
    RETURNING row_no
    """
)


async def _insert_batch(
    engine: AsyncEngine,
    plan_id: uuid.UUID,
    batch: list[Recipient],
    result: LoadResult,
    account: Mapping[str, str] | None,
    copy_first: bool,
) -> bool:
    """Store one batch; returns whether the next batch may try COPY first (none met a stored address)."""
    async with engine.begin() as conn:
        bucketed = (await conn.execute(_HOLD_PLAN, {"p": plan_id})).scalar()
        if bucketed is None:
            raise PlanNotFoundError(str(plan_id))
        found = await conn.execute(_SUPPRESSED, {"emails": [r.email for r in batch]})
        suppressed: dict[str, str] = dict(found.tuples().all())
        rows = _rows(plan_id, bucketed, batch, suppressed, account)
        copied = copy_first and await _copied(conn, rows)
        stored = rows if copied else await _inserted(conn, plan_id, bucketed, rows)
        statuses = Counter(r[_STATUS] for r in stored)
        await shared.bump(
            conn,
            plan_id,
            {"total": len(stored), "created": statuses["created"], "suppressed": statuses["suppressed"]},
        )
        await shared.bump_reasons(conn, plan_id, (r[_REASON] for r in stored))
    result.accepted += statuses["created"]
    result.suppressed += statuses["suppressed"]
    if len(stored) < len(rows):
        kept = {r[_ROW_NO] for r in stored}
        for r in rows:
            if r[_ROW_NO] not in kept:
                result.add_duplicate(
                    RowProblem(row=r[_ROW_NO], field="email", message="address already in this plan")
                )
    return copied


def _rows(
    plan_id: uuid.UUID,
    bucketed: bool,
    batch: list[Recipient],
    ours: Mapping[str, str],
    account: Mapping[str, str] | None,
) -> list[_Stored]:
    """The stored rows: ``suppressed`` (never sent) with its reason when the address is suppressed
    (``ours`` by address, ``account`` by lower-cased address), else ``created``."""
    rows: list[_Stored] = []
    for r in batch:
        why = ours.get(r.email) or (account.get(r.email.lower()) if account else None)
        if why is None:
            rows.append(
                (plan_id, r.row, r.email, r.name, r.vars_json, "created", None, r.time_zone, bucketed)
            )
        else:
            reason = SUPPRESSED_PREFIX + why
            rows.append(
                (plan_id, r.row, r.email, r.name, r.vars_json, "suppressed", reason, r.time_zone, bucketed)
            )
    return rows


async def _copied(conn: AsyncConnection, rows: list[_Stored]) -> bool:
    """COPY the rows into the ledger, or nothing when one of them is in the plan already (False).

    COPY is the cheapest way PostgreSQL stores rows (about a fifth less than an INSERT over
    arrays), but it cannot skip a conflicting row: the whole batch is rolled back to a
    savepoint and the caller takes the INSERT path.
    """
    savepoint = await conn.begin_nested()
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None  # a connection in a transaction has its asyncpg connection
    try:
        await raw.copy_records_to_table("messages", records=rows, columns=_COLUMNS)
    except asyncpg.UniqueViolationError:
        await savepoint.rollback()
        return False
    await savepoint.commit()
    return True


async def _inserted(
    conn: AsyncConnection, plan_id: uuid.UUID, bucketed: bool, rows: list[_Stored]
) -> list[_Stored]:
    """INSERT the rows whose address is not in the plan yet; returns those stored."""
    columns = dict(zip(_COLUMNS, zip(*rows, strict=True), strict=True))
    params = {
        "plan": plan_id,
        "bucketed": bucketed,
        "rows": columns["row_no"],
        "emails": columns["email"],
        "names": columns["name"],
        "vars": columns["vars"],
        "statuses": columns["status"],
        "reasons": columns["reason"],
        "zones": columns["time_zone"],
    }
    kept = set((await conn.execute(_INSERT_SQL, params)).scalars())
    return [r for r in rows if r[_ROW_NO] in kept]


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
    below = cutoff(float(row["release_percent"]))
    return await _enqueue_released(engine, plan_id, queue, below, bucketed=bool(row["bucketed"]))


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
    total = await _enqueue_released(engine, plan_id, queue, cutoff(percent), bucketed=bool(row["bucketed"]))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE plans SET release_percent = greatest(release_percent, :r), updated_at = now() "
                "WHERE id = :p"
            ),
            {"r": percent, "p": plan_id},
        )
    return total


_RELEASED_WAITING = shared.by_bucket(
    """
    SELECT m.id FROM messages m JOIN plans p ON p.id = m.plan_id
    WHERE m.plan_id = :p AND m.status = 'created' AND NOT m.enqueued AND m.bucket < :below {bucketed}
      AND {zone_open} AND m.id > :last ORDER BY m.id LIMIT :n
    """,
    zone_open=shared.ZONE_OPEN,
)


async def _enqueue_released(
    engine: AsyncEngine, plan_id: uuid.UUID, queue: QueueSink, below: int, *, bucketed: bool
) -> int:
    """Put every waiting message whose bucket is below ``below`` on the work queue (the one enqueue path).

    Idempotent: only rows with ``enqueued = false`` are sent to SQS, and they are
    flagged after SQS accepted them; a crash in between re-enqueues a few ids,
    which is harmless because the ledger claim decides what is sent. Rows above the
    cutoff stay ``created`` and unqueued: nobody claims them (the orphan sweep takes
    only queued rows) and the plan is not done while they wait. ``bucketed``: the
    plan's flag, read with ``below`` (its rows are in the bucket index).
    """
    total = 0
    last_id = 0
    while below > 0:
        async with engine.connect() as conn:
            ids = list(
                (
                    await conn.execute(
                        _RELEASED_WAITING[bucketed],
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


async def add_suppressions(
    engine: AsyncEngine, emails: Sequence[str], reason: str, plan_id: uuid.UUID | None = None
) -> int:
    """Suppress addresses for every plan (first reason wins); returns how many were new."""
    if not emails:
        return 0
    async with engine.begin() as conn:
        return await shared.insert_suppressions(conn, emails, reason, plan_id)

"""Recording SES events and tracking hits in the ledger (the API's writes).

Every write here is idempotent, so SNS redeliveries, replays, a user who opens
a mail twenty times or clicks an unsubscribe link twice change nothing the
second time:

- an SES event is inserted once per SNS MessageId (``events.sns_message_id``
  is unique); a duplicate ends the transaction with nothing else written;
- ``messages.*_at`` columns are set only while NULL, and the matching
  ``plan_counters`` column is bumped only when that first set happened, in
  the same transaction, so counts are exact and reading them is one row;
- hard bounces, complaints and unsubscribes add the address to
  ``suppressions`` (never sent to again, across all plans);
- a bounce counts once per message either as ``bounced`` (hard: Permanent)
  or as ``softBounced`` (Transient or Undetermined, which SES may retry and
  which do not suppress the address); a soft bounce followed by a hard one
  counts in both, as SES's own statistics do.

Opens are written in batches (one statement for up to 1000 hits) because the
pixel is the hottest path we serve; a "machine" open (mail privacy proxies,
link scanners, or an open seconds after sending) is counted apart in
``openedMachine`` through a once-per-message marker row in ``events``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.sender.sesevents import Kind, SesEvent
from emailplan.sender.store import shared

log = logging.getLogger(__name__)

# SES event kind → (messages column set once, plan_counters column bumped on first set).
_ONCE_COLUMNS: dict[Kind, tuple[str, str]] = {
    Kind.DELIVERY: ("delivered_at", "delivered"),
    Kind.BOUNCE: ("bounced_at", "bounced"),  # hard bounces; soft ones see _once_column
    Kind.COMPLAINT: ("complained_at", "complained"),
    Kind.OPEN: ("opened_at", "opened"),
    Kind.CLICK: ("clicked_at", "clicked"),
}

MACHINE_OPEN_PREFIX = "open-machine:"


@dataclass(frozen=True)
class RecordResult:
    """What recording one SES event did (for logs, metrics and tests)."""

    duplicate: bool
    message_id: int | None = None
    plan_id: uuid.UUID | None = None
    counted: bool = False
    suppressed: int = 0


@dataclass(frozen=True, slots=True)
class OpenHit:
    """One valid pixel request."""

    message_id: int
    at: datetime
    machine_agent: bool  # the user agent is a known proxy or scanner


# The two hot statements take arrays whose length is the batch size, which PostgreSQL cannot see
# when it plans. Left to choose, it plans at least the first five executions for their own
# batch, and when those were small (the first events after a start) its estimates may keep it
# planning every execution afresh: with 20,000 messages, batches of ten then cost the database
# 2.9-3.2 ms of CPU each instead of 1.2-1.5 ms (2026-12-07). Their one generic plan (index
# lookups per row) suits every batch size.
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"


class HotConnections:
    """A few connections of the engine's pool, held open for the two hot write paths.

    SNS events and pixel batches are single statements run in autocommit on the
    asyncpg connection directly: one round trip each, statements prepared once
    per connection, and no pool check-out, pre-ping or reset per request
    (those tripled the round trips). The connections still come from the
    process's one engine; one that breaks is invalidated and replaced.
    """

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self._idle: list[tuple[AsyncConnection, Any]] = []
        self._slots = asyncio.Semaphore(max(1, size))

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self._slots:
            if self._idle:
                conn, pg = self._idle.pop()
            else:
                conn = await self.engine.connect()
                try:
                    pg = (await conn.get_raw_connection()).driver_connection
                    assert pg is not None  # a connection just opened has its asyncpg connection
                    await pg.execute(GENERIC_PLANS)
                except BaseException:
                    await conn.close()
                    raise
            try:
                yield pg
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) or pg.is_closed() or pg.is_in_transaction():
                    await conn.invalidate()
                    await conn.close()
                else:
                    self._idle.append((conn, pg))
                raise
            self._idle.append((conn, pg))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.close()

    async def fetchrow(self, sql: str, *args: Any, attempts: int = 3) -> Any:
        """One statement's first row (see ``fetch``)."""
        rows = await self.fetch(sql, *args, attempts=attempts)
        return rows[0] if rows else None

    async def fetch(self, sql: str, *args: Any, attempts: int = 3) -> list[Any]:
        """One statement, retried on deadlock / serialization failure and on a broken connection."""
        for attempt in range(attempts):
            try:
                async with self.acquire() as pg:
                    return list(await pg.fetch(sql, *args))
            except (OSError, ConnectionError) as exc:
                if attempt == attempts - 1:
                    raise
                log.warning("database connection lost; retrying", extra={"error": type(exc).__name__})
            except Exception as exc:  # asyncpg errors carry .sqlstate; others are re-raised
                if type(exc).__name__ == "ConnectionDoesNotExistError" and attempt < attempts - 1:
                    continue
                if shared.sqlstate(exc) not in shared.RETRY_STATES or attempt == attempts - 1:
                    raise
            await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")


# SES event kind → the messages column set once (and the plan_counters column of
# the same name without ``_at``); transient/undetermined bounces set soft_bounced_at.
def _once_column(event: SesEvent) -> str | None:
    if event.soft_bounce:
        return "soft_bounced_at"
    once = _ONCE_COLUMNS.get(event.kind)
    return once[0] if once else None


# One statement records a whole batch of SES events (group commit): the API
# collects the events that arrive while the previous batch is being written.
# Within the statement each messages row is updated at most once (all its
# first-time columns together) and counters are bumped only for columns that
# were NULL before, so replays, duplicates in one batch and several kinds for
# one message all count exactly once.
_EVENTS_SQL = """
WITH input AS (
    SELECT * FROM json_to_recordset($1::json)
        AS t(sns_id text, ses_id text, ref bigint, plan_ref text, kind text, subtype text, rcpt text,
             at timestamptz, payload text, once_col text, suppress text, reason text)
), found AS (
    SELECT i.sns_id, COALESCE(a.id, b.id) AS message_id, COALESCE(a.plan_id, b.plan_id) AS plan_id
    FROM input i
    LEFT JOIN messages a ON a.ses_message_id = i.ses_id
    LEFT JOIN messages b ON a.id IS NULL AND b.id = i.ref
                         AND (i.plan_ref IS NULL OR b.plan_id::text = i.plan_ref)
), ev AS (
    INSERT INTO events
        (sns_message_id, plan_id, message_id, event_type, subtype, recipient, occurred_at, payload)
    SELECT i.sns_id, f.plan_id, f.message_id, i.kind, i.subtype, i.rcpt, COALESCE(i.at, now()),
           i.payload::jsonb
    FROM input i JOIN found f USING (sns_id)
    ORDER BY i.sns_id
    ON CONFLICT (sns_message_id) DO NOTHING
    RETURNING sns_message_id, message_id, plan_id
), todo AS (
    SELECT ev.message_id, ev.plan_id,
           min(COALESCE(i.at, now())) FILTER (WHERE i.once_col = 'delivered_at') AS d,
           min(COALESCE(i.at, now())) FILTER (WHERE i.once_col = 'bounced_at') AS b,
           min(COALESCE(i.at, now())) FILTER (WHERE i.once_col = 'soft_bounced_at') AS s,
           min(COALESCE(i.at, now())) FILTER (WHERE i.once_col = 'complained_at') AS c,
           min(COALESCE(i.at, now())) FILTER (WHERE i.once_col = 'opened_at') AS o,
           min(COALESCE(i.at, now())) FILTER (WHERE i.once_col = 'clicked_at') AS k,
           count(*) FILTER (WHERE i.kind = 'reject') AS rejects
    FROM ev JOIN input i ON i.sns_id = ev.sns_message_id
    WHERE ev.message_id IS NOT NULL
    GROUP BY ev.message_id, ev.plan_id
), old AS (
    SELECT m.id, m.delivered_at IS NULL AS d0, m.bounced_at IS NULL AS b0, m.complained_at IS NULL AS c0,
           m.soft_bounced_at IS NULL AS s0,
           m.opened_at IS NULL AS o0, m.clicked_at IS NULL AS k0
    FROM messages m JOIN todo t ON t.message_id = m.id
), upd AS (
    UPDATE messages m SET
        delivered_at = COALESCE(m.delivered_at, t.d), bounced_at = COALESCE(m.bounced_at, t.b),
        complained_at = COALESCE(m.complained_at, t.c), opened_at = COALESCE(m.opened_at, t.o),
        clicked_at = COALESCE(m.clicked_at, t.k), soft_bounced_at = COALESCE(m.soft_bounced_at, t.s)
    FROM todo t
    WHERE m.id = t.message_id AND (
        (t.d IS NOT NULL AND m.delivered_at IS NULL) OR (t.b IS NOT NULL AND m.bounced_at IS NULL)
        OR (t.c IS NOT NULL AND m.complained_at IS NULL) OR (t.o IS NOT NULL AND m.opened_at IS NULL)
        OR (t.k IS NOT NULL AND m.clicked_at IS NULL) OR (t.s IS NOT NULL AND m.soft_bounced_at IS NULL))
    RETURNING m.id
), deltas AS (
    SELECT t.plan_id,
           count(*) FILTER (WHERE t.d IS NOT NULL AND o.d0 AND u.id IS NOT NULL) AS delivered,
           count(*) FILTER (WHERE t.b IS NOT NULL AND o.b0 AND u.id IS NOT NULL) AS bounced,
           count(*) FILTER (WHERE t.s IS NOT NULL AND o.s0 AND u.id IS NOT NULL) AS soft_bounced,
           count(*) FILTER (WHERE t.c IS NOT NULL AND o.c0 AND u.id IS NOT NULL) AS complained,
           count(*) FILTER (WHERE t.o IS NOT NULL AND o.o0 AND u.id IS NOT NULL) AS opened,
           count(*) FILTER (WHERE t.k IS NOT NULL AND o.k0 AND u.id IS NOT NULL) AS clicked,
           COALESCE(sum(t.rejects), 0) AS rejected
    FROM todo t JOIN old o ON o.id = t.message_id LEFT JOIN upd u ON u.id = t.message_id
    GROUP BY t.plan_id
), bump AS (
    UPDATE plan_counters pc SET
        delivered = pc.delivered + d.delivered, bounced = pc.bounced + d.bounced,
        complained = pc.complained + d.complained, opened = pc.opened + d.opened,
        clicked = pc.clicked + d.clicked, "sesRejected" = pc."sesRejected" + d.rejected,
        "softBounced" = pc."softBounced" + d.soft_bounced
    FROM deltas d WHERE pc.plan_id = d.plan_id
    RETURNING 1
), sup AS (
    INSERT INTO suppressions (email, reason, plan_id)
    SELECT DISTINCT ON (e) e, i.reason, ev.plan_id
    FROM ev JOIN input i ON i.sns_id = ev.sns_message_id
    CROSS JOIN LATERAL unnest(string_to_array(i.suppress, ',')) AS e
    WHERE i.suppress IS NOT NULL AND i.suppress <> ''
    ORDER BY e
    ON CONFLICT (email) DO NOTHING
    RETURNING 1
)
SELECT ev.sns_message_id, ev.message_id, ev.plan_id, (SELECT count(*) FROM bump) AS bumped,
       (SELECT count(*) FROM sup) AS suppressed
FROM ev
"""


@dataclass(frozen=True)
class SesRecord:
    """One SES event to record, keyed by its SNS MessageId."""

    sns_message_id: str
    event: SesEvent
    payload_json: str


def _input_row(r: SesRecord) -> dict[str, Any]:
    """One event as a row of the statement's ``input`` (its JSON keys are the column names)."""
    ev = r.event
    subtype = ev.bounce_type or ev.feedback_type or ev.reason
    return {
        "sns_id": r.sns_message_id,
        "ses_id": ev.ses_message_id,
        "ref": ev.message_ref,
        "plan_ref": ev.plan_ref,
        "kind": ev.kind.value,
        "subtype": subtype[:200] if subtype else None,
        "rcpt": ",".join(ev.recipients)[:1000] or None,
        "at": ev.occurred_at,
        "payload": r.payload_json,
        "once_col": _once_column(ev),
        "suppress": ",".join(ev.recipients) if ev.suppresses else None,
        "reason": "complaint" if ev.kind is Kind.COMPLAINT else "bounce",
    }


async def record_ses_events(hot: HotConnections, records: Sequence[SesRecord]) -> list[RecordResult]:
    """Record a batch of SES events in one statement; a result per input, in order.

    The caller must not pass the same SNS MessageId twice in one batch (the
    API's batcher folds such duplicates itself), and passes text PostgreSQL can
    store (the API's goes through ``sesevents.storable_message``). The batch
    travels as one JSON parameter: as twelve arrays, the driver's per-element
    type checks made the client's side 22-29 µs per event in batches of ten,
    against 15-18 µs (2026-12-08).
    """
    if not records:
        return []
    rows = await hot.fetch(_EVENTS_SQL, orjson.dumps([_input_row(r) for r in records]).decode())
    inserted = {row["sns_message_id"]: row for row in rows}
    out: list[RecordResult] = []
    for r in records:
        row = inserted.get(r.sns_message_id)
        if row is None:
            out.append(RecordResult(duplicate=True))
        else:
            out.append(RecordResult(duplicate=False, message_id=row["message_id"], plan_id=row["plan_id"]))
    return out


async def record_ses_event(
    hot: HotConnections, sns_message_id: str, event: SesEvent, payload_json: str
) -> RecordResult:
    """Record one SES event exactly once (keyed by the SNS MessageId)."""
    return (await record_ses_events(hot, [SesRecord(sns_message_id, event, payload_json)]))[0]


# One statement per batch of pixel hits. The caller sends at most one hit per
# message (a human hit wins over a machine one); a hit within $4 seconds of the
# send is a machine open too (proxies and scanners fetch images on delivery).
_OPENS_SQL = """
WITH hits AS (
    SELECT h.id, h.at, h.agent FROM unnest($1::bigint[], $2::timestamptz[], $3::boolean[]) AS h(id, at, agent)
), classified AS (
    SELECT m.id, m.plan_id, hits.at,
           (hits.agent OR (m.sent_at IS NOT NULL AND hits.at < m.sent_at + make_interval(secs => $4::float8)))
             AS machine
    FROM hits JOIN messages m ON m.id = hits.id
), human AS (
    UPDATE messages m SET opened_at = c.at
    FROM classified c
    WHERE m.id = c.id AND NOT c.machine AND m.opened_at IS NULL
    RETURNING m.plan_id
), mach AS (
    INSERT INTO events (sns_message_id, plan_id, message_id, event_type, occurred_at)
    SELECT $5::text || c.id::text, c.plan_id, c.id, 'open_machine', c.at FROM classified c WHERE c.machine
    ON CONFLICT (sns_message_id) DO NOTHING
    RETURNING plan_id
), agg AS (
    SELECT plan_id, sum(h)::bigint AS h, sum(mm)::bigint AS mm FROM (
        SELECT plan_id, 1 AS h, 0 AS mm FROM human
        UNION ALL SELECT plan_id, 0, 1 FROM mach
    ) t GROUP BY plan_id
), upd AS (
    UPDATE plan_counters pc
    SET opened = pc.opened + agg.h, "openedMachine" = pc."openedMachine" + agg.mm
    FROM agg WHERE pc.plan_id = agg.plan_id
    RETURNING agg.h, agg.mm
)
SELECT COALESCE((SELECT sum(h) FROM upd), 0)::bigint AS human,
       COALESCE((SELECT sum(mm) FROM upd), 0)::bigint AS machine,
       COALESCE((SELECT array_agg(id) FROM classified WHERE NOT machine), '{}')::bigint[] AS human_ids,
       COALESCE((SELECT array_agg(id) FROM classified WHERE machine), '{}')::bigint[] AS machine_ids
"""


@dataclass(frozen=True)
class OpensResult:
    """New human and machine opens, and which ids are now settled either way."""

    human: int
    machine: int
    human_ids: list[int]
    machine_ids: list[int]


async def record_opens(hot: HotConnections, hits: Sequence[OpenHit], machine_window: float) -> OpensResult:
    """Write a batch of pixel hits (at most one per message) in one statement."""
    if not hits:
        return OpensResult(0, 0, [], [])
    row = await hot.fetchrow(
        _OPENS_SQL,
        [h.message_id for h in hits],
        [h.at for h in hits],
        [h.machine_agent for h in hits],
        float(machine_window),
        MACHINE_OPEN_PREFIX,
    )
    return OpensResult(
        int(row["human"]), int(row["machine"]), list(row["human_ids"]), list(row["machine_ids"])
    )


async def _set_once(conn: AsyncConnection, message_id: int, column: str, at: datetime) -> uuid.UUID | None:
    """Set ``messages.<column>`` if still NULL; the plan id when this call set it."""
    row = (
        await conn.execute(
            text(
                f"UPDATE messages SET {column} = :at WHERE id = :id AND {column} IS NULL "  # noqa: S608
                "RETURNING plan_id"
            ),
            {"at": at, "id": message_id},
        )
    ).first()
    return None if row is None else row[0]


async def record_click(engine: AsyncEngine, message_id: int, at: datetime) -> bool:
    """Record a click once per message; a click also proves an open (images may be blocked)."""

    async def work(conn: AsyncConnection) -> bool:
        plan_id = await _set_once(conn, message_id, "clicked_at", at)
        if plan_id is not None:
            await shared.bump(conn, plan_id, {"clicked": 1})
        opened_plan = await _set_once(conn, message_id, "opened_at", at)
        if opened_plan is not None:
            await shared.bump(conn, opened_plan, {"opened": 1})
        return plan_id is not None

    result: bool = await shared.with_retry(engine, work)
    return result


async def record_unsubscribe(engine: AsyncEngine, message_id: int, at: datetime) -> bool | None:
    """Unsubscribe the message's recipient: suppress the address, count once per message.

    Returns None when the message does not exist (a valid token for a deleted
    plan), else whether this call was the first unsubscribe.
    """

    async def work(conn: AsyncConnection) -> bool | None:
        row = (
            await conn.execute(text("SELECT plan_id, email FROM messages WHERE id = :id"), {"id": message_id})
        ).first()
        if row is None:
            return None
        plan_id, email = row[0], row[1]
        first = await _set_once(conn, message_id, "unsubscribed_at", at) is not None
        if first:
            await shared.bump(conn, plan_id, {"unsubscribed": 1})
        await shared.insert_suppressions(conn, [email], "unsubscribe", plan_id)
        return first

    result: bool | None = await shared.with_retry(engine, work)
    return result


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers (readiness)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))

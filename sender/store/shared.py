"""The SQL that the ledger and the event store share: counters, suppressions, retries, plan states.

A counter or a suppression written two ways drifts (one path lower-cases, the
other does not; one whitelists columns, the other does not), so both modules
call these.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from emailplan.contract.plans import PlanState
from emailplan.sender.models import COUNTER_COLUMNS
from emailplan.sender.models import state_sql as state_sql  # the store's statements format states with it

# The one rule of "finished": a complete list, still open, with nothing created or processing.
# ``p`` is the plans row and ``{counts}`` the plan's counters (or a CTE with the same columns).
_DONE_SQL = (
    f"p.state IN {state_sql(PlanState.READY, PlanState.SUSPENDED)} AND p.recipients_complete "
    "AND {counts}.created = 0 AND {counts}.processing = 0"
)


def done_when(counts: str) -> str:
    """The condition under which plan ``p`` becomes done, with its counts read from ``counts``."""
    return _DONE_SQL.format(counts=counts)


@contextlib.asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection whose every statement is its own transaction: one round trip each.

    For the worker's hot statements, each written as one statement that does all its work
    (``engine.begin()`` adds a BEGIN and a COMMIT round trip, and holds every row lock across
    them). Errors are SQLAlchemy's as with ``engine.begin()``, so ``OUTAGE`` still covers them.
    """
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


# PostgreSQL's deadlock_detected and serialization_failure: the transaction may simply run again.
RETRY_STATES = ("40P01", "40001")

# Local-time delivery: a message (alias ``m``) of a plan (alias ``p``) may be queued and claimed
# only while its zone's window is open; NULL ``open_zones`` is a plan without such a window. A
# row without a zone is named "" (the window's fallback zone) in ``open_zones``.
ZONE_OPEN = "(p.open_zones IS NULL OR coalesce(m.time_zone, '') = ANY(p.open_zones))"


def by_bucket(sql: str, **parts: str) -> dict[bool, TextClause]:
    """A read by cohort bucket (of a message ``m``) in two forms: for a bucketed plan, whose rows
    are all in the partial bucket index, ``{bucketed}`` becomes ``AND m.bucketed`` so PostgreSQL
    can use it; for any other plan (no bucket index entries) it is dropped (migration 0013)."""
    return {
        flag: text(sql.format(bucketed="AND m.bucketed" if flag else "", **parts)) for flag in (True, False)
    }


async def bump(conn: AsyncConnection, plan_id: uuid.UUID, deltas: Mapping[str, int]) -> None:
    """Add ``deltas`` to the plan's counters (in the caller's transaction); names are whitelisted."""
    changes = [(k, v) for k, v in deltas.items() if v]
    if not changes:
        return
    unknown = {k for k, _ in changes} - set(COUNTER_COLUMNS)
    if unknown:
        raise ValueError(f"unknown counters {sorted(unknown)}")
    # Quoted: one counter is spelled in camelCase (softBounced), as the count it holds.
    sets = ", ".join(f'"{col}" = "{col}" + :d{i}' for i, (col, _) in enumerate(changes))
    await conn.execute(
        text(f"UPDATE plan_counters SET {sets} WHERE plan_id = :plan"),  # noqa: S608 - columns are whitelisted
        {"plan": plan_id, **{f"d{i}": v for i, (_, v) in enumerate(changes)}},
    )


# Reasons in a fixed order (sorted): concurrent writers lock the rows in the same order.
_BUMP_REASONS = text(
    "INSERT INTO plan_failure_reasons (plan_id, reason, count) "
    "SELECT :plan, r, n FROM unnest(CAST(:reasons AS text[]), CAST(:counts AS bigint[])) AS t(r, n) "
    "ON CONFLICT (plan_id, reason) DO UPDATE SET count = plan_failure_reasons.count + excluded.count"
)


async def bump_reasons(conn: AsyncConnection, plan_id: uuid.UUID, reasons: Iterable[str | None]) -> None:
    """Count messages that failed or were suppressed, by reason (in the caller's transaction).

    Called after ``bump`` in the same transaction: the plan's counters row is locked
    first, so writers never wait on each other's reason rows in a cycle.
    """
    counted = sorted(Counter(r for r in reasons if r).items())
    if not counted:
        return
    await conn.execute(
        _BUMP_REASONS,
        {"plan": plan_id, "reasons": [r for r, _ in counted], "counts": [n for _, n in counted]},
    )


async def insert_suppressions(
    conn: AsyncConnection, emails: Sequence[str], reason: str, plan_id: uuid.UUID | None
) -> int:
    """Suppress addresses for every plan (first reason wins); returns how many were new."""
    rows = await conn.execute(
        text(
            "INSERT INTO suppressions (email, reason, plan_id) "
            "SELECT DISTINCT lower(trim(e)), CAST(:r AS text), CAST(:p AS uuid) "
            "FROM unnest(CAST(:emails AS text[])) AS e "
            "ON CONFLICT (email) DO NOTHING RETURNING email"
        ),
        {"emails": list(emails), "r": reason, "p": plan_id},
    )
    return len(rows.all())


def sqlstate(exc: object) -> str | None:
    """The SQLSTATE of a driver error (asyncpg or wrapped), or None."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if code is None and exc is not None:
        code = getattr(getattr(exc, "__cause__", None), "sqlstate", None)
    return code if isinstance(code, str) else None


async def with_retry(engine: AsyncEngine, work: Any, attempts: int = 3) -> Any:
    """Run ``work(conn)`` in a transaction, again after a deadlock or serialization failure."""
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except DBAPIError as exc:
            if sqlstate(exc.orig) not in RETRY_STATES or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")

"""The ledger's side of the account's quota: recipients sent in the window, all plans together.

SES counts ``Max24HourSend`` over a rolling window for the whole account; the ledger
knows every send's ``sent_at`` (indexed), so it can say how many fell in the window and
when enough of the oldest age out for ``limit`` to be free again. PostgreSQL's clock is
the one every pod shares, so the window is measured there.

Counting sends cannot keep pods that send at the same moment under the quota: each sees
the same count. So permits are also *reserved* here before they are spent
(:func:`reserve`): every grant adds its permits to the current slice of
``quota_slices`` under one advisory lock, and is cut to what the window's slices leave.
A permit counts from its grant until ``slack`` after the window (it is spent or returned
within that), so the slices over-count, never under-count, what SES saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

SLICES_PER_WINDOW = 1000  # a window's sum reads at most about this many rows
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('emailplan:quota', 0))")
# Slices still counting. ``now()`` is when the transaction began: in ``reserve`` that is before
# the lock was waited for, so a wait only makes the sum count more, never less.
_RESERVED = text(
    "SELECT coalesce(sum(permits), 0) FROM quota_slices WHERE slice > now() - make_interval(secs => :span)"
)
_ADD = text(
    "INSERT INTO quota_slices (slice, permits) "
    "VALUES (date_bin(make_interval(secs => :width), clock_timestamp(), timestamptz 'epoch'), :n) "
    "ON CONFLICT (slice) DO UPDATE SET permits = quota_slices.permits + excluded.permits"
)
_FORGET = text("DELETE FROM quota_slices WHERE slice < clock_timestamp() - make_interval(secs => :span)")


@dataclass(frozen=True)
class WindowUsage:
    """What the window holds against the quota (all plans) and, when at or over ``limit``,
    when one slot frees."""

    sent: int  # the larger of the sends in the window and the permits reserved for it
    now: datetime
    frees_at: datetime | None = None


def _span(window_seconds: float, slack_seconds: float) -> float:
    """How far back a reserved slice still counts: the window, the slack, one slice."""
    return window_seconds + slack_seconds + window_seconds / SLICES_PER_WINDOW


_SENT = text(
    "SELECT count(*) AS sent, now() AS now FROM messages WHERE sent_at > now() - make_interval(secs => :w)"
)
_SEND_FREES = text(
    "SELECT sent_at + make_interval(secs => :w) FROM messages "
    "WHERE sent_at > now() - make_interval(secs => :w) ORDER BY sent_at OFFSET :skip LIMIT 1"
)
_SLICE_FREES = text(
    "SELECT slice + make_interval(secs => :span) FROM (SELECT slice, sum(permits) OVER (ORDER BY slice) "
    "AS upto FROM quota_slices WHERE slice > now() - make_interval(secs => :span)) AS s "
    "WHERE upto >= :need ORDER BY slice LIMIT 1"
)


async def window_usage(
    engine: AsyncEngine, window_seconds: int, limit: int | None, *, slack_seconds: float
) -> WindowUsage:
    """The window's sends, or the permits reserved for it when more (the ones a grant holds
    and the ones it gave back unspent, which count until they age out); with ``limit``
    reached, when enough of the oldest age out for one more."""
    span = _span(window_seconds, slack_seconds)
    async with engine.connect() as conn:
        row = (await conn.execute(_SENT, {"w": window_seconds})).one()
        sent, now = int(row.sent), row.now
        reserved = int(await conn.scalar(_RESERVED, {"span": span}) or 0)
        used = max(sent, reserved)
        if limit is None or used < limit:
            return WindowUsage(used, now)
        if reserved >= sent:
            frees = await conn.scalar(_SLICE_FREES, {"span": span, "need": used - limit + 1})
        else:
            frees = await conn.scalar(_SEND_FREES, {"w": window_seconds, "skip": sent - limit})
        return WindowUsage(used, now, frees)


async def reserve(
    engine: AsyncEngine, want: int, *, limit: int, floor: int, window_seconds: float, slack_seconds: float
) -> int:
    """Reserve up to ``want`` permits of the account's ``limit``; returns how many were reserved.

    Used is the larger of the window's reserved permits and ``floor`` (the last count of
    sends, the ledger's or SES's, which may include sends made elsewhere). One transaction
    under an advisory lock, so concurrent reservations of every pod are serialized.
    """
    width = window_seconds / SLICES_PER_WINDOW
    span = _span(window_seconds, slack_seconds)
    async with engine.begin() as conn:
        await conn.execute(_LOCK)
        used = int(await conn.scalar(_RESERVED, {"span": span}) or 0)
        got = max(0, min(want, limit - max(used, floor)))
        if got:
            await conn.execute(_ADD, {"width": width, "n": got})
        await conn.execute(_FORGET, {"span": 2 * span})
    return got

"""The ledger's side of the account's quota: recipients sent in the window, all plans together.

SES counts ``Max24HourSend`` over a rolling window for the whole account; the ledger
knows every send's ``sent_at`` (indexed), so it can say how many fell in the window and
when enough of the oldest age out for ``limit`` to be free again. PostgreSQL's clock is
the one every pod shares, so the window is measured there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class WindowUsage:
    """Sends in the window (all plans) and, when at or over ``limit``, when one slot frees."""

    sent: int
    now: datetime
    frees_at: datetime | None = None


async def window_usage(engine: AsyncEngine, window_seconds: int, limit: int | None) -> WindowUsage:
    """Count the window's sends; with ``limit`` reached, when the ``sent - limit + 1``-th oldest ages out."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*) AS sent, now() AS now FROM messages "
                    "WHERE sent_at > now() - make_interval(secs => :w)"
                ),
                {"w": window_seconds},
            )
        ).one()
        sent, now = int(row.sent), row.now
        if limit is None or sent < limit:
            return WindowUsage(sent, now)
        frees = await conn.scalar(
            text(
                "SELECT sent_at + make_interval(secs => :w) FROM messages "
                "WHERE sent_at > now() - make_interval(secs => :w) "
                "ORDER BY sent_at OFFSET :skip LIMIT 1"
            ),
            {"w": window_seconds, "skip": sent - limit},
        )
        return WindowUsage(sent, now, frees)

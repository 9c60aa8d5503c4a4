"""One engine factory for every data-plane process.

Connections are checked before use (``pool_pre_ping``) so a PostgreSQL restart costs an
API request a reconnect, not an error; not in the worker: it retries every database error
anyway (``outage.OUTAGE``; a connection that died is dropped with the pool on its first
error), and the ping was a round trip before every transaction, 2.7 % of its CPU. The URL
is a secret and never logged.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from emailplan.sender.settings import SenderSettings


def make_engine(
    settings: SenderSettings | None = None,
    *,
    url: str | None = None,
    pool_size: int | None = None,
    pre_ping: bool = True,
) -> AsyncEngine:
    """An asyncpg engine for ``url`` (default: ``settings.database_url``)."""
    settings = settings or SenderSettings()
    return create_async_engine(
        url or settings.database_url.get_secret_value(),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=5,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        hide_parameters=True,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (results are returned to callers)."""
    return async_sessionmaker(engine, expire_on_commit=False)

"""Errors of the outside world that the worker's loops survive by retrying.

A database restart, a network blip or an AWS error must never end a worker: each
loop logs, waits and tries again. One tuple, so every part agrees on what an outage is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import SQLAlchemyError

OUTAGE = (SQLAlchemyError, OSError, BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)
log = logging.getLogger("emailplan.worker")
T = TypeVar("T")


async def retry_forever(fn: Callable[[], Awaitable[Any]], what: str, stop: asyncio.Event) -> None:
    """Call ``fn`` until it answers (an outage is logged and tried again a second later) or ``stop``."""
    while not stop.is_set():
        try:
            await fn()
            return
        except OUTAGE as exc:
            log.warning(f"cannot {what}, retrying", extra={"error": type(exc).__name__})
            await asyncio.sleep(1.0)


async def retry_until(fn: Callable[[], Awaitable[T]], what: str, seconds: float) -> T | None:
    """Call ``fn`` until it answers or ``seconds`` have passed (then None, logged as given up)."""
    deadline = time.monotonic() + max(1.0, seconds)
    while True:
        try:
            return await fn()
        except OUTAGE as exc:
            if time.monotonic() > deadline:
                log.error(f"gave up trying to {what}", extra={"error": type(exc).__name__})
                return None
            await asyncio.sleep(0.5)

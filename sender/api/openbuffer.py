"""Pixel hits buffered in memory and written in batches.

The pixel is the hottest endpoint: a request must cost one HMAC check and an
append, never a database round trip. Hits are collapsed per message (a
human hit wins over a machine one) and written by one background task when
``max_rows`` are waiting or every ``max_seconds``; a message whose open is
already settled is remembered so repeat opens do not reach the database.
Shutdown flushes what is left. While the database is down the buffer is
kept (bounded by ``max_pending``) and retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from emailplan.sender.api import metrics
from emailplan.sender.store.eventstore import OpenHit, OpensResult

log = logging.getLogger(__name__)

Writer = Callable[[Sequence[OpenHit]], Awaitable[OpensResult]]


class OpenBuffer:
    """Collects pixel hits and writes them with ``writer`` in batches."""

    def __init__(
        self,
        writer: Writer,
        *,
        max_rows: int = 1000,
        max_seconds: float = 2.0,
        max_pending: int = 200_000,
        remember: int = 500_000,
    ) -> None:
        self._writer = writer
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.max_pending = max_pending
        self.remember = remember
        self._pending: dict[int, OpenHit] = {}
        self._settled_human: set[int] = set()
        self._settled_machine: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written_human = 0
        self.written_machine = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, message_id: int, machine_agent: bool) -> None:
        """Note one valid pixel hit (cheap: dict and set look-ups only)."""
        if message_id in self._settled_human:
            return
        if machine_agent and message_id in self._settled_machine:
            return
        current = self._pending.get(message_id)
        if current is not None and (machine_agent or not current.machine_agent):
            return
        if current is None and len(self._pending) >= self.max_pending:
            metrics.OPENS_DROPPED.inc()
            return
        self._pending[message_id] = OpenHit(message_id, datetime.now(UTC), machine_agent)
        if len(self._pending) >= self.max_rows:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="open-buffer")

    async def close(self) -> None:
        """Stop the background writer and flush everything still pending."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        while self._pending:
            if not await self.flush():
                log.error("dropping unwritten opens at shutdown", extra={"count": len(self._pending)})
                break

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.max_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                return
            while self._pending and not self._closing:
                if not await self.flush():
                    await asyncio.sleep(min(self.max_seconds, 1.0))
                    break
                if len(self._pending) < self.max_rows:
                    break

    async def flush(self) -> bool:
        """Write up to ``max_rows`` pending hits; False when the write failed (hits are kept)."""
        if not self._pending:
            return True
        batch: list[OpenHit] = []
        for mid in list(self._pending)[: self.max_rows]:
            batch.append(self._pending.pop(mid))
        metrics.OPEN_BUFFER.set(len(self._pending))
        started = time.perf_counter()
        try:
            result = await self._writer(batch)
        except Exception:
            log.exception("writing opens failed; will retry", extra={"rows": len(batch)})
            for hit in batch:
                other = self._pending.get(hit.message_id)
                if other is None or (other.machine_agent and not hit.machine_agent):
                    self._pending[hit.message_id] = hit
            return False
        metrics.OPEN_FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.OPENS_RECORDED.labels(kind="human").inc(result.human)
        metrics.OPENS_RECORDED.labels(kind="machine").inc(result.machine)
        self.written_human += result.human
        self.written_machine += result.machine
        if len(self._settled_human) > self.remember:
            self._settled_human.clear()
        if len(self._settled_machine) > self.remember:
            self._settled_machine.clear()
        self._settled_human.update(result.human_ids)
        self._settled_machine.update(result.machine_ids)
        return True

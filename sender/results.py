"""The result writer: send outcomes made durable moments after SES answers.

Group commit: a sender hands its result over and waits until it is in the ledger; the
writer writes whatever is waiting in one transaction (at most ``max_rows``), and the
next batch starts as soon as the previous one committed. Under load batches grow by
themselves (everything that arrived during the last write); at low rates a result is
written a few milliseconds after SES answered. So a SIGKILL loses only outcomes of
requests in flight (each sender slot holds at most one unrecorded outcome), never a
buffer of seconds of sends, and a database outage stops the senders instead of piling
up sends that nobody can record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.sender.outage import OUTAGE
from emailplan.sender.store import sendresults, shared
from emailplan.sender.workermetrics import WRITE_SECONDS

log = logging.getLogger("emailplan.worker")

Written = Callable[[Sequence[sendresults.SendResult]], None]


class ResultWriter:
    """Writes ``SendResult`` batches for one plan; ``on_written`` hears of every committed batch,
    ``on_outage`` of every failed write."""

    def __init__(
        self,
        engine: AsyncEngine,
        plan_id: uuid.UUID,
        *,
        max_rows: int,
        on_written: Written,
        on_outage: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._plan_id = plan_id
        self._max_rows = max(1, max_rows)
        self._on_written = on_written
        self._on_outage = on_outage
        self._pending: list[tuple[sendresults.SendResult, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_ids(self) -> set[int]:
        return {r.id for r, _ in self._pending}

    async def write(self, result: sendresults.SendResult) -> None:
        """Hand over one result; returns once it is committed (a cancelled caller leaves it queued)."""
        await asyncio.shield(self.put(result))

    def put(self, result: sendresults.SendResult) -> asyncio.Future[None]:
        """Hand over one result without waiting; the future is done once it is committed.

        For senders that need not wait (the bulk slot): the message stays held (its lease,
        the pod's backlog limit) until the write, so the writer still bounds how far sending
        runs ahead of the ledger, and shutdown flushes what is pending as before.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((result, done))
        self._wake.set()
        return done

    async def run(self) -> None:
        """Write batches as results arrive, until cancelled; an outage is retried every second."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush(deadline=None)

    async def flush(self, deadline: float | None) -> bool:
        """Write everything waiting; False if the database stayed away past ``deadline``."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._max_rows]
                started = time.monotonic()
                try:
                    await sendresults.record_results(self._engine, self._plan_id, [r for r, _ in batch])
                except OUTAGE as exc:
                    self._on_outage()
                    log.warning(
                        "cannot write results, keeping them and retrying",
                        extra={
                            "error": type(exc).__name__,
                            # deadlock, lock timeout or connection lost: the driver's code says which
                            "sqlstate": shared.sqlstate(getattr(exc, "orig", None)),
                            "rows": len(self._pending),
                        },
                    )
                    if deadline is not None and time.monotonic() > deadline:
                        log.error(
                            "results not written before the deadline; their leases will run out and "
                            "those messages are reconciled or sent again",
                            extra={"rows": len(self._pending)},
                        )
                        return False
                    await asyncio.sleep(1.0)
                    continue
                WRITE_SECONDS.observe(time.monotonic() - started)
                del self._pending[: len(batch)]
                self._on_written([r for r, _ in batch])
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        return True

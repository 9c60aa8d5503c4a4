"""Group commit for SES events: concurrent SNS requests share one database statement.

Each SNS request still gets its own answer only after its event is durably
recorded (SNS must retry anything we did not store), but the events that
arrive while a write is in flight are written together by the next one. At
low load a request is written alone at once; under load batches grow, so the
cost per event falls instead of the queue growing. The same SNS MessageId
arriving twice while pending is folded into one write (the second answer is
``duplicate``).
"""

from __future__ import annotations

import asyncio
import logging

from emailplan.sender.api import metrics
from emailplan.sender.store.eventstore import HotConnections, RecordResult, SesRecord, record_ses_events

log = logging.getLogger(__name__)


class EventBatcher:
    """Writes SES events in batches of up to ``max_batch`` with ``max_inflight`` writes at once."""

    def __init__(self, hot: HotConnections, *, max_batch: int = 500, max_inflight: int = 2) -> None:
        self._hot = hot
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: list[tuple[SesRecord, asyncio.Future[RecordResult]]] = []
        self._pending: dict[str, asyncio.Future[RecordResult]] = {}
        self._writers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.events = 0

    async def record(self, record: SesRecord) -> RecordResult:
        """Record one event; returns once its batch is committed (raises if the write failed)."""
        earlier = self._pending.get(record.sns_message_id)
        if earlier is not None:
            await asyncio.shield(earlier)
            return RecordResult(duplicate=True)
        fut: asyncio.Future[RecordResult] = asyncio.get_running_loop().create_future()
        self._pending[record.sns_message_id] = fut
        self._queue.append((record, fut))
        self._kick()
        return await asyncio.shield(fut)

    def _kick(self) -> None:
        while self._queue and self._writers < self.max_inflight:
            self._writers += 1
            task = asyncio.get_running_loop().create_task(self._drain(), name="ses-event-writer")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        """Write batches until the queue is empty.

        One task writes batch after batch: the next batch leaves as soon as the previous one is
        committed, without waiting a loop iteration for a new task to start (under load an
        iteration is a dozen requests' work, and the writer is the path every request waits on).
        """
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._write(batch)
        finally:
            self._writers -= 1
            if self._queue:  # a writer cancelled with work left: hand it on
                self._kick()

    async def _write(self, batch: list[tuple[SesRecord, asyncio.Future[RecordResult]]]) -> None:
        try:
            results = await record_ses_events(self._hot, [record for record, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter must learn the write failed
            log.warning(
                "writing a batch of SES events failed",
                extra={"events": len(batch), "error": type(exc).__name__},
            )
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # the waiting handler re-raises it; never "unretrieved"
        else:
            metrics.SES_BATCH_SIZE.observe(len(batch))
            self.batches += 1
            self.events += len(batch)
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        finally:
            for record, _ in batch:
                self._pending.pop(record.sns_message_id, None)

    async def close(self) -> None:
        """Wait for queued and in-flight writes (graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

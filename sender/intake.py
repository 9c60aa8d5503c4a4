"""Intake: SQS work in, ledger claims out, and the SQS side of every message's end.

SQS only says which ids to look at; the ledger claim decides what this pod sends.
Each received SQS message becomes a ``JobState`` that is deleted once every id it
brought is written, and made visible again *at once* when its ids were given back
(suspend, shutdown) or could not be claimed (database down, plan not claimable yet),
so live pods never wait out a visibility timeout for work nobody holds. The orphan
sweep reclaims, on its own short period, rows whose lease ran out (a pod died) and
queued rows whose SQS work was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.sender.outage import OUTAGE
from emailplan.sender.store import claims, loading
from emailplan.sender.workqueue import SQS_BATCH, Job, WorkQueue

log = logging.getLogger("emailplan.worker")

# Work that could not be claimed because the plan is not claimable right now (suspended,
# before startAt, rows locked by a concurrent claim) comes back after this many seconds.
NOT_YET_DELAY = 1
# Finished SQS messages are deleted ten to a call (SQS's batch), or once the oldest has
# waited this long: one DeleteMessageBatch per finished message was half the SQS calls of a
# raw sender. A receipt deleted late is harmless: if it shows up again meanwhile, the ledger
# says its ids are final and the claim takes nothing.
DELETE_WAIT = 1.0


@dataclass
class JobState:
    """One SQS message: deleted once every id it brought is written, shown again if any was given back."""

    job: Job
    outstanding: set[int] = field(default_factory=set)
    give_back: bool = False


@dataclass(frozen=True)
class Taken:
    """Messages claimed by one intake step and when the claim was asked for (lease clock)."""

    claimed: list[claims.Claimed]
    asked_at: float
    outage: bool = False  # the database was away: back off before the next step


class Intake:
    """Receives and claims work for one plan; tracks which SQS message each held id came from."""

    def __init__(
        self,
        engine: AsyncEngine,
        queue: WorkQueue,
        plan_id: uuid.UUID,
        owner: str,
        *,
        lease_seconds: float,
        poll_wait_seconds: int,
    ) -> None:
        self._engine = engine
        self._queue = queue
        self._plan_id = plan_id
        self._owner = owner
        self._lease = float(lease_seconds)
        self._poll_wait = poll_wait_seconds
        self._jobs: list[JobState] = []
        self._by_id: dict[int, JobState] = {}
        self._unclaimed: list[Job] = []  # received, claim not finished: visible again if we stop now
        self._finished: list[str] = []  # receipts of finished messages, deleted in batches
        self._finished_since = 0.0  # monotonic; when the oldest of them finished

    @property
    def jobs_held(self) -> int:
        return len(self._jobs)

    async def receive(self, room: int) -> Taken | None:
        """Long-poll SQS and claim what arrives; None when the queue had nothing.

        Everything one receive brought is claimed in one statement (up to ten SQS messages of
        ``loading.IDS_PER_QUEUE_MESSAGE`` ids): one round trip instead of one per SQS message.
        """
        jobs = await self._queue.receive(
            self._plan_id,
            wait_seconds=self._poll_wait,
            visibility=int(max(1, self._lease)),
            max_messages=max(1, min(10, -(-room // loading.IDS_PER_QUEUE_MESSAGE))),
        )
        if not jobs:
            return None
        self._unclaimed.extend(jobs)
        asked_at = time.monotonic()
        ids = list(dict.fromkeys(i for job in jobs for i in job.ids))
        try:
            claimed = await claims.claim(self._engine, self._plan_id, ids, self._owner, self._lease)
            left = set(ids) - {c.id for c in claimed}
            waiting = (
                set(await claims.still_created(self._engine, self._plan_id, sorted(left))) if left else set()
            )
        except OUTAGE as exc:
            # Not claimed (or not known to be): show the work again at once, for this pod or
            # another, instead of leaving it invisible for a whole lease. Ids that were claimed
            # after all come back through the orphan sweep when their lease runs out.
            log.warning(
                "cannot claim work, putting it back on the queue", extra={"error": type(exc).__name__}
            )
            for job in jobs:
                self._unclaimed.remove(job)
            await self._visible([job.receipt for job in jobs], delay=0)
            return Taken([], asked_at, outage=True)
        by_id = {c.id: c for c in claimed}
        for job in jobs:
            self._unclaimed.remove(job)
            # An id that came twice (SQS delivers at least once) belongs to the first message.
            mine = [by_id.pop(i) for i in job.ids if i in by_id]
            await self._track(job, mine, waiting=any(i in waiting for i in job.ids))
        return Taken(claimed, asked_at)

    async def _track(self, job: Job, claimed: list[claims.Claimed], *, waiting: bool) -> None:
        """Hold one SQS message until its claimed ids are written; settle it now if it has none."""
        if not claimed:
            if waiting:
                await self._visible([job.receipt], delay=NOT_YET_DELAY)
            else:
                await self._delete([job.receipt])  # every id is final or held by a live lease elsewhere
            return
        state = JobState(job, {c.id for c in claimed}, give_back=waiting)
        self._jobs.append(state)
        for c in claimed:
            self._by_id[c.id] = state

    async def sweep(self, limit: int, *, stale_seconds: float, released_below: int) -> Taken:
        """Reclaim rows whose lease ran out, and released rows untouched for ``stale_seconds``."""
        asked_at = time.monotonic()
        claimed = await claims.claim_orphans(
            self._engine,
            self._plan_id,
            self._owner,
            self._lease,
            limit=limit,
            stale_seconds=stale_seconds,
            released_below=released_below,
        )
        if claimed:
            log.info("reclaimed orphaned messages", extra={"count": len(claimed)})
        return Taken(claimed, asked_at)

    async def settle(self, written: Iterable[int] = (), released: Iterable[int] = ()) -> None:
        """Ids written (or lost to another pod) and ids given back: finish SQS messages that are complete."""
        for i in written:
            state = self._by_id.pop(i, None)
            if state is not None:
                state.outstanding.discard(i)
        for i in released:
            state = self._by_id.pop(i, None)
            if state is not None:
                state.outstanding.discard(i)
                state.give_back = True
        finished = [j for j in self._jobs if not j.outstanding]
        if not finished:
            return
        self._jobs = [j for j in self._jobs if j.outstanding]
        if not self._finished:
            self._finished_since = time.monotonic()
        self._finished += [j.job.receipt for j in finished if not j.give_back]
        await self.delete_finished(force=False)
        await self._visible([j.job.receipt for j in finished if j.give_back], delay=0)

    async def delete_finished(self, *, force: bool = True) -> None:
        """Delete finished SQS messages: all of them with ``force``, else full batches, and
        everything once the oldest waited ``DELETE_WAIT`` (the heartbeat calls this too)."""
        if not self._finished:
            return
        if force or time.monotonic() - self._finished_since >= DELETE_WAIT:
            receipts, self._finished = self._finished, []
        else:
            whole = len(self._finished) - len(self._finished) % SQS_BATCH
            receipts, self._finished = self._finished[:whole], self._finished[whole:]
        await self._delete(receipts)

    async def extend_visibility(self) -> None:
        """Heartbeat for the SQS side: keep held work invisible for another lease (and delete
        finished work that has waited for its batch long enough)."""
        await self.delete_finished(force=False)
        receipts = [j.job.receipt for j in self._jobs if j.outstanding]
        if receipts:
            await self._queue.retry_later(self._plan_id, receipts, delay=int(max(1, self._lease)))

    async def give_back_all(self) -> None:
        """Shutdown: every SQS message not finished (or received and not claimed) visible again at once."""
        receipts = [j.job.receipt for j in self._jobs] + [j.receipt for j in self._unclaimed]
        self._jobs, self._unclaimed, self._by_id = [], [], {}
        await self.delete_finished()
        await self._visible(receipts, delay=0)

    async def _visible(self, receipts: list[str], delay: int) -> None:
        if receipts:
            with contextlib.suppress(*OUTAGE):
                await self._queue.retry_later(self._plan_id, receipts, delay=delay)

    async def _delete(self, receipts: list[str]) -> None:
        if not receipts:
            return
        try:
            await self._queue.delete(self._plan_id, receipts)
        except OUTAGE as exc:
            # Redelivery is harmless: the ledger says these ids are finished.
            log.warning("cannot delete finished work from SQS", extra={"error": type(exc).__name__})


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stopping`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)

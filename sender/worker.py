"""``emailplan worker``: send one plan's emails from its SQS queue through SES.

How a message travels (and why nothing is lost or sent twice):

1. the poller long-polls SQS only while the plan is sendable and the local
   backlog is small, then *claims* the ids in the ledger under a lease
   (atomic UPDATE … SKIP LOCKED: two pods never hold the same message);
2. sender tasks take a token from the plan's shared bucket (PostgreSQL, so
   every pod together holds the plan's rate and the account's MaxSendRate),
   render, and call SES; throttling slows down and retries, permanent errors
   fail the message with the reason, transient ones retry with backoff; a
   paused or suspended SES account fails nothing: the pod releases what it
   holds and stops sending for ``ses_paused_backoff_seconds``, then tries again;
3. results are written in batches (``flush_rows`` or ``flush_seconds``) with
   the counters in one transaction; only then is the SQS message deleted;
4. leases are extended while held; a crashed pod's leases expire and are
   reclaimed (by SQS redelivery or the orphan sweep), so at most the messages
   in flight at the crash can repeat;
5. SIGTERM: stop polling, finish sends in flight, release what was not sent,
   flush, make unfinished SQS work visible again, exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.runtime.logsetup import setup_logging
from emailplan.runtime.metrics import serve_metrics
from emailplan.runtime.sentry import init_sentry
from emailplan.sender import ledger
from emailplan.sender.db import make_engine
from emailplan.sender.ratelimit import Bucket, Meter, Throttle, backoff, grant_want, refill, take, wait_time
from emailplan.sender.rendering import CompiledPlan, RenderError, compile_plan, render
from emailplan.sender.ses import (
    SesClient,
    SesPausedError,
    SesPermanentError,
    SesThrottledError,
    SesTransientError,
)
from emailplan.sender.settings import SenderSettings
from emailplan.sender.tokens import make_token
from emailplan.sender.workqueue import Job, WorkQueue

log = logging.getLogger("emailplan.worker")

SENT = Counter("emailplan_sender_sent_total", "Emails accepted by SES")
FAILED = Counter("emailplan_sender_failed_total", "Emails that failed permanently", ["reason"])
THROTTLED = Counter("emailplan_sender_throttled_total", "SES throttling answers (retried)")
RETRIES = Counter("emailplan_sender_retries_total", "Transient send errors retried")
ACCOUNT_PAUSED = Counter(
    "emailplan_sender_account_paused_total",
    "SES answers that the account or configuration set cannot send (paused, suspended)",
    ["code"],
)
PAUSED = Gauge("emailplan_sender_paused_by_ses", "1 while this pod holds its plan because SES is paused")
RATE = Gauge("emailplan_sender_plan_rate", "Configured plan rate (emails/s, all pods)")
FACTOR = Gauge("emailplan_sender_throttle_factor", "Local slow-down factor after throttling (1 = none)")
QUEUE_VISIBLE = Gauge("emailplan_sender_queue_visible", "Work messages waiting in SQS (queue lag)")
BACKLOG = Gauge("emailplan_sender_backlog", "Claimed messages waiting for a send slot in this pod")
SEND_SECONDS = Histogram("emailplan_sender_send_seconds", "SES SendEmail latency")

# Errors of the outside world (database restart, network, AWS) that a loop survives by retrying.
OUTAGE = (SQLAlchemyError, OSError, BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)
T = TypeVar("T")
# Shared-bucket grants: about GRANT_HORIZON seconds of the plan's rate at a time (less when
# this pod's own recent throughput is lower), at most one grant per GRAB_INTERVAL while the
# bucket is drained, unused tokens returned to the bucket after TOKEN_TTL. Together they
# bound how far pods can burst above the rate.
GRANT_HORIZON = 0.2
GRAB_INTERVAL = 0.05
TOKEN_TTL = 0.25


@dataclass
class Held:
    """A claimed message in this pod, and the SQS job (if any) that brought it."""

    claimed: ledger.Claimed
    job: JobState | None
    tries: int = 0


@dataclass
class JobState:
    """Bookkeeping for one SQS message: acked once every id it brought is written back."""

    job: Job
    outstanding: set[int] = field(default_factory=set)
    released: bool = False


class TokenPool:
    """Send permits: local pacing (throttle slow-down) in front of the shared PostgreSQL bucket."""

    def __init__(self, worker: Worker) -> None:
        self._w = worker
        self._tokens = 0.0
        self._lock = asyncio.Lock()
        self._local = Bucket(tokens=1.0, rate=worker.plan_rate, burst=max(1.0, worker.plan_rate * 0.25))
        self._last = time.monotonic()
        self._next_grab = 0.0
        self._tokens_until = 0.0
        self.throttle = Throttle()
        self._give_back = 0
        self._meter = Meter()
        self.stats = {"grants": 0, "granted": 0.0, "returned": 0.0, "grant_seconds": 0.0}

    def _pace(self) -> float:
        """Seconds to wait for the local pacing bucket (rate times throttle factor)."""
        now = time.monotonic()
        rate = self._w.plan_rate * self.throttle.factor
        self._local = refill(Bucket(self._local.tokens, rate, max(1.0, rate * 0.25)), now - self._last)
        self._last = now
        self._local, got = take(self._local, 1)
        return 0.0 if got else max(0.001, wait_time(self._local, 1))

    async def acquire(self) -> bool:
        """Wait for one send permit; False when the worker is stopping (nothing taken)."""
        async with self._lock:
            while not self._w.stopping.is_set():
                delay = self._pace()
                if delay:
                    await asyncio.sleep(delay)
                    continue
                break
            if self._w.stopping.is_set():
                return False
            if self._tokens >= 1 and time.monotonic() > self._tokens_until:
                # Tokens not spent in time go back to the shared bucket with the next grant
                # (spending them late could burst above the rate; dropping them wastes it).
                self._give_back += int(self._tokens)
                self.stats["returned"] += int(self._tokens)
                self._tokens = 0.0
            while self._tokens < 1:
                if self._w.stopping.is_set():
                    return False
                wait = self._next_grab - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                demand = float(len(self._w.backlog_ids) + self._w.in_flight + 1)
                want = grant_want(
                    self._w.plan_rate * self.throttle.factor, GRANT_HORIZON, demand, self._meter.rate
                )
                try:
                    t0 = time.monotonic()
                    got, rate = await ledger.take_tokens(
                        self._w.engine,
                        self._w.plan_id,
                        want,
                        account_rate=self._w.account_rate,
                        give_back=self._give_back,
                    )
                except OUTAGE as exc:
                    log.warning("rate bucket unavailable, retrying", extra={"error": type(exc).__name__})
                    await asyncio.sleep(1.0)
                    continue
                self._give_back = 0
                self.stats["grant_seconds"] += time.monotonic() - t0
                self.stats["grants"] += 1
                self.stats["granted"] += got
                self._w.set_rate(rate)
                self._tokens += got
                self._tokens_until = time.monotonic() + TOKEN_TTL
                if got < want:
                    # The shared bucket is drained (other pods take their share too): come back
                    # after a pause instead of polling PostgreSQL, so each grant carries many
                    # tokens and pods do not spend their time fighting over the bucket row.
                    pause = GRAB_INTERVAL if got >= 1 else max(GRAB_INTERVAL, min(1.0, 1.0 / max(rate, 0.1)))
                    self._next_grab = time.monotonic() + pause
                    if got < 1:
                        await asyncio.sleep(pause)
            self._tokens -= 1
            self._meter = self._meter.add(1, time.monotonic())
            return True


class Worker:
    """One sender process for one plan."""

    def __init__(
        self,
        settings: SenderSettings,
        plan_id: uuid.UUID,
        engine: AsyncEngine,
        queue: WorkQueue,
        ses: SesClient,
        *,
        exit_when_idle: bool = False,
    ) -> None:
        self.settings = settings
        self.plan_id = plan_id
        self.engine = engine
        self.queue = queue
        self.ses = ses
        self.exit_when_idle = exit_when_idle
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.sign = functools.partial(make_token, settings.token_key.get_secret_value().encode())
        self.plan: ledger.PlanView | None = None
        self.compiled: CompiledPlan | None = None
        self._compiled_for: Any = None
        self.plan_rate = 14.0
        self.account_rate: float | None = settings.max_send_rate
        self.stopping = asyncio.Event()
        self.sendq: asyncio.Queue[Held | None] = asyncio.Queue()
        self.backlog_ids: set[int] = set()
        self.held: dict[int, Held] = {}
        self.in_flight = 0
        self.results: list[ledger.SendResult] = []
        self.first_result_at: float | None = None
        self.jobs: list[JobState] = []
        self.parked: list[Held] = []
        self.tokens = TokenPool(self)
        self.sent = 0
        self.idle_rounds = 0
        self.paused_until = 0.0  # monotonic; SES said the account cannot send

    # ------------------------------------------------------------------ plan state

    def set_rate(self, rate: float) -> None:
        if rate != self.plan_rate:
            log.info("plan rate changed", extra={"plan": str(self.plan_id), "rate": rate})
        self.plan_rate = rate
        RATE.set(rate)

    def sendable(self) -> bool:
        plan = self.plan
        if plan is None or plan.state != "ready" or time.monotonic() < self.paused_until:
            return False
        return plan.start_at is None or plan.start_at.timestamp() <= time.time()

    async def refresh_plan(self) -> None:
        plan = await ledger.plan_for_worker(self.engine, self.plan_id)
        self.plan = plan
        if plan is None:
            return
        self.set_rate(plan.rate_per_second)
        marker = (plan.updated_at, str(plan.spec))
        if marker != self._compiled_for:
            try:
                self.compiled = compile_plan(plan.spec, str(plan.id))
            except RenderError as exc:
                self.compiled = None
                log.error("plan template does not compile; not sending", extra={"reason": str(exc)})
            self._compiled_for = marker

    async def plan_loop(self) -> None:
        """Re-read the plan row every second: rate, suspend/stop and template changes need no restart."""
        while not self.stopping.is_set():
            try:
                await self.refresh_plan()
                if not self.sendable():
                    await self.release_parked(drain=True)
            except OUTAGE as exc:
                log.warning("cannot read plan, retrying", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1.0)

    async def release_parked(self, drain: bool) -> int:
        """Give back held messages that will not be sent now (plan suspended/stopped, or shutdown).

        Their SQS jobs are made visible again (not deleted), so a resumed plan
        finds the work; the ledger claim ignores ids that are finished.
        """
        if drain:
            while not self.sendq.empty():
                item = self.sendq.get_nowait()
                if item is not None:
                    self.parked.append(item)
        if not self.parked:
            return 0
        parked, self.parked = self.parked, []
        ids = [h.claimed.id for h in parked]
        try:
            released = await ledger.release(self.engine, self.plan_id, ids, self.owner)
        except OUTAGE:
            self.parked = parked + self.parked
            raise
        for h in parked:
            self.held.pop(h.claimed.id, None)
            self.backlog_ids.discard(h.claimed.id)
            if h.job is not None:
                h.job.outstanding.discard(h.claimed.id)
                h.job.released = True
        BACKLOG.set(len(self.backlog_ids))
        log.info(
            "released held messages",
            extra={"count": released, "state": self.plan.state if self.plan else None},
        )
        await self.settle_jobs(delay=5)
        return released

    # ------------------------------------------------------------------ intake

    def backlog_limit(self) -> int:
        """Claimed-but-unsent messages this pod may hold: about a second of the plan's rate.

        Deep enough to keep the senders busy, shallow enough that pods sharing a
        plan share its work (a pod must not sit on minutes of someone else's sends).
        """
        return int(min(5000, max(100, self.plan_rate, self.settings.worker_concurrency * 2)))

    async def poll_loop(self) -> None:
        """Receive work when sendable and not over the backlog limit; claim it in the ledger."""
        while not self.stopping.is_set():
            if not self.sendable() or self.compiled is None or len(self.backlog_ids) >= self.backlog_limit():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.2)
                continue
            started = time.monotonic()
            try:
                room = self.backlog_limit() - len(self.backlog_ids)
                jobs = await self.queue.receive(
                    self.plan_id,
                    wait_seconds=self.settings.poll_wait_seconds,
                    visibility=int(max(1, self.settings.lease_seconds)),
                    max_messages=max(1, min(10, -(-room // 100))),
                )
            except OUTAGE as exc:
                log.warning("cannot receive work, retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(1.0)
                continue
            if not jobs:
                await self.on_idle()
                if time.monotonic() - started < 0.5:
                    await asyncio.sleep(0.5)  # no queue (yet) or no long poll: do not spin
                continue
            self.idle_rounds = 0
            for job in jobs:
                await self.take_job(job)

    async def take_job(self, job: Job) -> None:
        try:
            claimed = await ledger.claim(
                self.engine, self.plan_id, job.ids, self.owner, self.settings.lease_seconds
            )
        except OUTAGE as exc:
            # Not acked: SQS shows it again after the visibility timeout.
            log.warning("cannot claim work, leaving it on the queue", extra={"error": type(exc).__name__})
            await asyncio.sleep(0.5)
            return
        state = JobState(job=job, outstanding={c.id for c in claimed})
        if not claimed:
            if self.sendable():
                await self._ack([state])  # every id is already sent, stopped, suppressed or held elsewhere
            else:
                with contextlib.suppress(*OUTAGE):
                    await self.queue.retry_later(self.plan_id, [job.receipt], delay=10)
            return
        self.jobs.append(state)
        for c in claimed:
            self.enqueue_local(Held(c, state))

    def enqueue_local(self, held: Held) -> None:
        self.held[held.claimed.id] = held
        self.backlog_ids.add(held.claimed.id)
        self.sendq.put_nowait(held)
        BACKLOG.set(len(self.backlog_ids))

    async def on_idle(self) -> None:
        """Queue empty: reclaim orphans (expired leases, work lost to the DLQ), maybe exit."""
        self.idle_rounds += 1
        try:
            orphans = await ledger.claim_orphans(
                self.engine,
                self.plan_id,
                self.owner,
                self.settings.lease_seconds,
                limit=100,
                stale_seconds=max(5.0, self.settings.lease_seconds),
            )
        except OUTAGE:
            return
        if orphans:
            log.info("reclaimed orphaned messages", extra={"count": len(orphans)})
            for c in orphans:
                self.enqueue_local(Held(c, None))
            return
        if self.exit_when_idle and not self.held and not self.results:
            try:
                counts = await ledger.get_counts(self.engine, self.plan_id) or {}
            except OUTAGE:
                return
            plan = self.plan
            finished = plan is not None and (
                plan.state in ("done", "stopped")
                or (
                    plan.recipients_complete
                    and counts.get("created", 0) == 0
                    and counts.get("processing", 0) == 0
                )
            )
            if finished:
                log.info("plan has nothing left to send; exiting (--exit-when-idle)")
                self.stopping.set()

    # ------------------------------------------------------------------ sending

    async def send_loop(self) -> None:
        """One of ``worker_concurrency`` senders; a ``None`` in the queue tells it to stop."""
        while True:
            held = await self.sendq.get()
            if held is None:
                return
            if held.claimed.id not in self.held:
                continue
            self.in_flight += 1
            try:
                await self.send_one(held)
            finally:
                self.in_flight -= 1

    async def send_one(self, held: Held) -> None:
        msg = held.claimed
        compiled = self.compiled
        if compiled is None:
            self.sendq.put_nowait(held)
            await asyncio.sleep(1.0)
            return
        try:
            rendered = render(
                compiled,
                message_id=msg.id,
                email=msg.email,
                name=msg.name,
                variables=msg.vars,
                public_url=self.settings.public_url,
                sign=self.sign,
            )
        except RenderError as exc:
            self.finish(held, ledger.SendResult(msg.id, "failed", error=f"RenderError: {exc}"[:1000]))
            FAILED.labels("render").inc()
            return
        while True:
            if not await self.tokens.acquire() or not self.sendable():
                # Stopping, suspended or stopped: park it; it is released, not sent.
                self.parked.append(held)
                return
            start = time.monotonic()
            try:
                ses_id = await self.ses.send(rendered)
            except SesThrottledError:
                THROTTLED.inc()
                self.tokens.throttle = self.tokens.throttle.throttled()
                FACTOR.set(self.tokens.throttle.factor)
                held.tries += 1
                await asyncio.sleep(backoff(min(held.tries, 6), base=0.2, cap=10))
                continue
            except SesPausedError as exc:
                # Nobody's message is at fault: fail none, give them all back (the plan loop
                # releases what is parked while not sendable) and try again after a long pause.
                self.account_paused(exc)
                self.parked.append(held)
                return
            except SesPermanentError as exc:
                FAILED.labels(exc.code).inc()
                self.finish(held, ledger.SendResult(msg.id, "failed", error=str(exc)[:1000]))
                return
            except SesTransientError as exc:
                held.tries += 1
                if held.tries >= self.settings.max_attempts:
                    FAILED.labels("transient").inc()
                    error = f"gave up after {held.tries} attempts: {exc}"[:1000]
                    self.finish(held, ledger.SendResult(msg.id, "failed", error=error))
                    return
                RETRIES.inc()
                await asyncio.sleep(backoff(held.tries, base=0.5, cap=30))
                continue
            SEND_SECONDS.observe(time.monotonic() - start)
            if self.paused_until:
                self.paused_until = 0.0
                PAUSED.set(0)
                log.info("SES account sends again; plan resumed", extra={"plan": str(self.plan_id)})
            SENT.inc()
            self.sent += 1
            if self.tokens.throttle.factor < 1:
                self.tokens.throttle = self.tokens.throttle.succeeded()
                FACTOR.set(self.tokens.throttle.factor)
            self.finish(held, ledger.SendResult(msg.id, "sent", ses_message_id=ses_id, at=datetime.now(UTC)))
            return

    def account_paused(self, exc: SesPausedError) -> None:
        """SES says the account (or configuration set) may not send: hold the plan for a while."""
        ACCOUNT_PAUSED.labels(exc.code).inc()
        now = time.monotonic()
        if now < self.paused_until:
            return  # other sends in flight hit the same pause: one log line per pause
        self.paused_until = now + max(1.0, self.settings.ses_paused_backoff_seconds)
        PAUSED.set(1)
        log.error(
            "SES account cannot send (sending paused or account suspended); holding the plan, "
            "releasing its messages unsent and trying again later",
            extra={
                "plan": str(self.plan_id),
                "code": exc.code,
                "reason": exc.message,
                "retry_in_s": self.settings.ses_paused_backoff_seconds,
            },
        )

    def finish(self, held: Held, result: ledger.SendResult) -> None:
        self.backlog_ids.discard(result.id)
        BACKLOG.set(len(self.backlog_ids))
        self.results.append(result)
        if self.first_result_at is None:
            self.first_result_at = time.monotonic()

    # ------------------------------------------------------------------ write-back

    async def flush_loop(self) -> None:
        while not self.stopping.is_set():
            due = self.first_result_at is not None and (
                len(self.results) >= self.settings.flush_rows
                or time.monotonic() - self.first_result_at >= self.settings.flush_seconds
            )
            if due:
                await self.flush()
            else:
                await asyncio.sleep(0.05)

    async def flush(self, deadline: float | None = None) -> bool:
        """Write buffered results (≤ flush_rows per transaction); ack SQS jobs that are complete.

        Keeps retrying through a database outage (results are never dropped) until ``deadline``.
        """
        while self.results:
            batch = self.results[: self.settings.flush_rows]
            try:
                await ledger.record_results(self.engine, self.plan_id, batch)
            except OUTAGE as exc:
                log.warning(
                    "cannot write results, keeping them and retrying",
                    extra={"error": type(exc).__name__, "rows": len(self.results)},
                )
                if deadline is not None and time.monotonic() > deadline:
                    log.error(
                        "results not written before the deadline; their leases will expire and "
                        "those messages may be sent again",
                        extra={"rows": len(self.results)},
                    )
                    return False
                await asyncio.sleep(1.0)
                continue
            del self.results[: len(batch)]
            for result in batch:
                held = self.held.pop(result.id, None)
                if held is not None and held.job is not None:
                    held.job.outstanding.discard(result.id)
        self.first_result_at = None
        await self.settle_jobs(delay=5)
        return True

    async def settle_jobs(self, delay: int) -> None:
        """Delete SQS jobs whose ids are all written; show again (after ``delay``) those with released ids."""
        finished = [j for j in self.jobs if not j.outstanding]
        if not finished:
            return
        self.jobs = [j for j in self.jobs if j.outstanding]
        acked = [j for j in finished if not j.released]
        again = [j for j in finished if j.released]
        if acked:
            await self._ack(acked)
        if again:
            with contextlib.suppress(*OUTAGE):
                await self.queue.retry_later(self.plan_id, [j.job.receipt for j in again], delay=delay)

    async def _ack(self, states: list[JobState]) -> None:
        try:
            await self.queue.delete(self.plan_id, [s.job.receipt for s in states])
        except OUTAGE as exc:
            # Redelivery is harmless: the ledger says these ids are finished.
            log.warning("cannot delete finished work from SQS", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ leases, metrics

    async def lease_loop(self) -> None:
        """Extend leases and SQS visibility of everything held, every third of a lease."""
        period = max(0.5, self.settings.lease_seconds / 3)
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), period)
            if self.stopping.is_set():
                return
            ids = list(self.held)
            receipts = [j.job.receipt for j in self.jobs if j.outstanding]
            try:
                await ledger.extend_lease(self.engine, ids, self.owner, self.settings.lease_seconds)
                if receipts:
                    await self.queue.retry_later(
                        self.plan_id, receipts, delay=int(max(1, self.settings.lease_seconds))
                    )
            except OUTAGE as exc:
                log.warning("cannot extend leases", extra={"error": type(exc).__name__})

    async def stats_loop(self) -> None:
        last_sent, last_t = 0, time.monotonic()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 10)
            with contextlib.suppress(*OUTAGE):
                visible, _ = await self.queue.depth(self.plan_id)
                QUEUE_VISIBLE.set(visible)
            now = time.monotonic()
            log.info(
                "progress",
                extra={
                    "plan": str(self.plan_id),
                    "sent": self.sent,
                    "rate": round((self.sent - last_sent) / max(now - last_t, 1e-6), 2),
                    "backlog": len(self.backlog_ids),
                    "plan_rate": self.plan_rate,
                },
            )
            last_sent, last_t = self.sent, now

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        if self.account_rate is None:
            self.account_rate = await self.ses.max_send_rate()
        log.info(
            "worker starting",
            extra={"plan": str(self.plan_id), "owner": self.owner, "account_rate": self.account_rate},
        )
        await _retry_forever(self.refresh_plan, "read plan", self.stopping)
        tasks = [
            asyncio.create_task(self.plan_loop(), name="plan"),
            asyncio.create_task(self.poll_loop(), name="poll"),
            asyncio.create_task(self.flush_loop(), name="flush"),
            asyncio.create_task(self.lease_loop(), name="lease"),
            asyncio.create_task(self.stats_loop(), name="stats"),
        ]
        senders = [
            asyncio.create_task(self.send_loop(), name=f"send-{i}")
            for i in range(self.settings.worker_concurrency)
        ]
        stop_wait = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([*tasks, *senders, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error("worker task crashed", exc_info=task.exception())
                self.stopping.set()
        await self.shutdown(tasks, senders)

    async def shutdown(self, tasks: list[asyncio.Task[None]], senders: list[asyncio.Task[None]]) -> None:
        log.info("stopping: finishing sends in flight", extra={"in_flight": self.in_flight})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Senders stop before anything still queued: put the stop marks at the front.
        while not self.sendq.empty():
            self.sendq.get_nowait()  # still in self.held: released below
        for _ in senders:
            self.sendq.put_nowait(None)
        try:
            await asyncio.wait_for(
                asyncio.gather(*senders, return_exceptions=True), self.settings.shutdown_grace_seconds
            )
        except TimeoutError:
            log.warning("sends still running at the end of the grace period")
        # Everything held and not written as a result is unsent: give it back.
        written = {r.id for r in self.results}
        self.parked = [h for h in self.held.values() if h.claimed.id not in written]
        while not self.sendq.empty():
            self.sendq.get_nowait()
        await self.flush(deadline=time.monotonic() + self.settings.shutdown_grace_seconds)
        await _retry_until(lambda: self.release_parked(drain=False), "release held messages", 10.0)
        pending = [j for j in self.jobs if j.outstanding]
        if pending:
            with contextlib.suppress(*OUTAGE):
                await self.queue.retry_later(self.plan_id, [j.job.receipt for j in pending], delay=0)
        log.info("worker stopped", extra={"sent": self.sent, **self.tokens.stats})


async def _retry_forever(fn: Callable[[], Awaitable[Any]], what: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await fn()
            return
        except OUTAGE as exc:
            log.warning(f"cannot {what}, retrying", extra={"error": type(exc).__name__})
            await asyncio.sleep(1.0)


async def _retry_until(fn: Callable[[], Awaitable[T]], what: str, seconds: float) -> T | None:
    deadline = time.monotonic() + max(1.0, seconds)
    while True:
        try:
            return await fn()
        except OUTAGE as exc:
            if time.monotonic() > deadline:
                log.error(f"gave up trying to {what}", extra={"error": type(exc).__name__})
                return None
            await asyncio.sleep(0.5)


async def run_worker(settings: SenderSettings, plan_id: uuid.UUID, *, exit_when_idle: bool = False) -> None:
    """Run until SIGTERM/SIGINT (or, with ``exit_when_idle``, until the plan is finished)."""
    engine = make_engine(settings, pool_size=min(settings.db_pool_size, 5))
    try:
        async with (
            WorkQueue.open(settings) as queue,
            SesClient(settings, max_connections=settings.worker_concurrency * 2) as ses,
        ):
            worker = Worker(settings, plan_id, engine, queue, ses, exit_when_idle=exit_when_idle)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stopping.set)
            await worker.run()
    finally:
        await engine.dispose()


def main(args: argparse.Namespace) -> int:
    """CLI entry (``emailplan worker``): settings from the environment, plan from --plan-id or env."""
    setup_logging()
    settings = SenderSettings()
    settings.require_secrets("token_key")
    init_sentry(settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None, component="worker")
    raw_plan = getattr(args, "plan_id", None) or settings.plan_id
    if not raw_plan:
        log.error("no plan: set EMAILPLAN_PLAN_ID or pass --plan-id")
        return 2
    try:
        plan_id = uuid.UUID(str(raw_plan))
    except ValueError:
        log.error("plan id is not a UUID", extra={"plan": str(raw_plan)[:64]})
        return 2
    serve_metrics(settings.metrics_port)
    exit_when_idle = bool(getattr(args, "exit_when_idle", False)) or settings.exit_when_idle
    asyncio.run(run_worker(settings, plan_id, exit_when_idle=exit_when_idle))
    return 0

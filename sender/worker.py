"""``emailplan worker``: send one plan's emails from its SQS queue through SES.

The worker is a pipeline of small parts, each with a narrow interface:

* ``intake``: SQS work in, ledger claims out (atomic UPDATE … SKIP LOCKED: two pods
  never hold the same message); work that cannot be claimed or is given back is shown
  again at once; the orphan sweep reclaims, every ``sweep_seconds``, what dead pods held;
* ``leases``: what this pod holds, renewed by a heartbeat every quarter of a short
  lease, and never sent while the lease may have run out;
* ``pacer``: one permit per email from the plan's shared PostgreSQL bucket, at the
  rate SES accepts (``ratelimit.SendLimit``);
* ``sespolicy``: what to do with each SES answer (a pure function), acted on in
  ``sendpath`` for both send strategies: ``rawsend`` (one SendEmail a message) and
  ``bulksend`` (SendBulkEmail, up to 50 a call);
* ``results``: outcomes written moments after SES answered (group commit), so a
  SIGKILL can repeat only the sends in flight at that instant;
* ``workermetrics``: the Prometheus metrics.

This module wires them together: the plan loop (rate, suspend/stop, template changes
without a restart), the send slots, and the lifecycle. SIGTERM: stop taking work,
finish sends in flight, write their results, give back what was not sent and make its
SQS work visible again at once, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.plans import PlanState
from emailplan.sender.accountgate import AccountGate
from emailplan.sender.bulkmail import MAX_ENTRIES, BulkPlan, compile_bulk, uses_bulk
from emailplan.sender.bulksend import BulkSender
from emailplan.sender.failtext import failure_reason
from emailplan.sender.intake import Intake, Taken, pause
from emailplan.sender.leases import Held, Leases, lease_owner
from emailplan.sender.outage import OUTAGE, retry_forever, retry_until
from emailplan.sender.pacer import Pacer
from emailplan.sender.ratelimit import Meter, backlog_limit
from emailplan.sender.rawsend import RawSender
from emailplan.sender.rendering import (
    Campaign,
    CompiledPlan,
    RenderError,
    compile_campaign,
)
from emailplan.sender.results import ResultWriter
from emailplan.sender.sendpath import SendPath, SendSettings
from emailplan.sender.ses import SesClient
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import claims, plans, sendresults
from emailplan.sender.tokens import make_token
from emailplan.sender.workermetrics import (
    BACKLOG,
    FAILED,
    IN_FLIGHT,
    QUEUE_VISIBLE,
)
from emailplan.sender.workqueue import WorkQueue

log = logging.getLogger("emailplan.worker")
T = TypeVar("T")
# Rows queued in the ledger whose SQS work went missing are swept only while the queue looks
# empty; otherwise SQS brings them in order (this age means "not while SQS has work").
NEVER_STALE = 10 * 365 * 86400.0
# The plan loop reads the plan every second; no answer for this long means the database is away.
DB_QUIET = 3.0
SWEEP_AGAIN_SECONDS = 0.2  # after a sweep that took something: the next one this soon
# A wrongly released cohort gives back many rows: one warning (with the running total) this often.
UNDECIDED_LOG_SECONDS = 10.0
ACCOUNT_FIRST_READ_SECONDS = 10.0  # the first GetAccount read before sending; after it, sending starts anyway


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
        self.ses = ses
        self.exit_when_idle = exit_when_idle
        self.owner = lease_owner(settings.pod_name, settings.pod_child)
        self.plan: plans.LedgerPlan | None = None
        self.compiled: Campaign | None = None
        self._compiled_for: Any = None
        self.stopping = asyncio.Event()
        self.sendq: asyncio.Queue[Held | None] = asyncio.Queue()
        self.parked: list[Held] = []
        self.in_flight = 0
        self.meter = Meter()  # this worker's sending rate, for its backlog limit
        self.queue_empty = False
        self.plan_read_at = 0.0  # monotonic; the last time the database answered the plan loop
        self.plan_read_began = 0.0  # monotonic; when the latest plan read was sent
        self._plan_lock = asyncio.Lock()
        self.undecided = 0  # rows given back because their A/B variant was not decided
        self._undecided_logged = -UNDECIDED_LOG_SECONDS
        self.db_ok_since: float | None = None  # monotonic; the database has answered every call since
        lease = float(settings.lease_seconds)
        self.leases = Leases(engine, plan_id, self.owner, lease)
        self.intake = Intake(
            engine,
            queue,
            plan_id,
            self.owner,
            lease_seconds=lease,
            poll_wait_seconds=settings.poll_wait_seconds,
        )
        self.account = AccountGate(engine, settings)
        self.pacer = Pacer(
            engine,
            plan_id,
            account_rate=settings.max_send_rate,
            demand=lambda: len(self.leases),
            stopping=self.stopping,
            gate=self.account,
        )
        self.writer = ResultWriter(
            engine, plan_id, max_rows=settings.flush_rows, on_written=self._written, on_outage=self.db_away
        )
        self.bulk_plan: BulkPlan | None = None  # the plan sends with SendBulkEmail (ses.sendApi bulk)
        self._wire_send_path(settings, ses)
        self.crashed = False  # a task died of a bug: the process exits non-zero (not "finished")
        self._queue = queue
        self._to_ack: list[int] = []
        self._ack_wake = asyncio.Event()

    def _wire_send_path(self, settings: SenderSettings, ses: SesClient) -> None:
        """The send pipeline: the shared path and its two strategies (raw and bulk)."""
        send_settings = SendSettings(
            self.plan_id, settings.public_url, settings.max_attempts, settings.ses_paused_backoff_seconds
        )
        self.path = SendPath(
            send_settings,
            ses=ses,
            pacer=self.pacer,
            leases=self.leases,
            writer=self.writer,
            sign=functools.partial(make_token, settings.token_key.get_secret_value().encode()),
            sendable=self.sendable,
            park=lambda held: self.parked.append(held),  # self.parked is replaced, not only emptied
        )
        self.bulk = BulkSender(self.path)
        self.raw = RawSender(
            self.path,
            campaign=lambda: self.compiled,
            pick_fresh=self.pick_fresh,
            give_back=self.give_back_undecided,
            requeue=self.sendq.put_nowait,
        )

    # ------------------------------------------------------------------ plan state

    def sendable(self) -> bool:
        plan = self.plan
        if plan is None or plan.state != PlanState.READY or time.monotonic() < self.path.paused_until:
            return False
        return plan.start_at is None or plan.start_at.timestamp() <= time.time()

    async def refresh_plan(self) -> None:
        self.plan_read_began = time.monotonic()
        plan = await plans.plan_for_worker(self.engine, self.plan_id)
        self.plan = plan
        self.plan_read_at = time.monotonic()
        if self.db_ok_since is None:
            self.db_ok_since = self.plan_read_at
        if plan is None:
            return
        self.pacer.set_plan_rate(plan.rate_per_second)
        marker = (plan.updated_at, str(plan.spec))
        if marker != self._compiled_for:
            try:
                self.compiled = compile_campaign(plan.spec, str(plan.id))
                self.bulk_plan = compile_bulk(plan.spec, str(plan.id)) if uses_bulk(plan.spec) else None
            except RenderError as exc:
                self.compiled = self.bulk_plan = None
                log.error("plan template does not compile; not sending", extra={"reason": str(exc)})
            self._compiled_for = marker

    async def plan_loop(self) -> None:
        """Re-read the plan row every second: rate, suspend/stop and template changes need no restart."""
        while not self.stopping.is_set():
            try:
                await self.refresh_plan()
                if not self.sendable():
                    await self.release_parked(drain=True)
                else:
                    self.unpark()
            except OUTAGE as exc:
                self.db_away()
                log.warning("cannot read plan, retrying", extra={"error": type(exc).__name__})
            await pause(self.stopping, 1.0)

    def unpark(self) -> None:
        """Sendable again before the plan loop saw the pause (a suspend shorter than a second, or
        SES back): messages parked meanwhile go back to the send slots instead of waiting forever."""
        parked, self.parked = self.parked, []
        for held in parked:
            if held.claimed.id in self.leases:
                self.sendq.put_nowait(held)

    def db_away(self) -> None:
        self.db_ok_since = None

    def db_settled(self) -> bool:
        """The database has answered for half a lease: long enough for every live pod to renew
        its leases and write its waiting results after an outage. Only then are expired leases
        someone else's orphans; sweeping earlier would send again what a live pod sent during
        the outage and could not record yet."""
        since = self.db_ok_since
        return since is not None and time.monotonic() - since >= self.settings.lease_seconds / 2

    async def release_parked(self, drain: bool) -> int:
        """Give back held messages that will not be sent now (plan suspended/stopped, or shutdown).

        Their SQS messages are shown again at once (not deleted), so a resumed plan
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
        ids = [h.claimed.id for h in parked if h.claimed.id in self.leases]
        try:
            released = await self.leases.release(ids)
        except OUTAGE:
            self.parked = parked + self.parked
            raise
        self._show_backlog()
        log.info(
            "released held messages",
            extra={"count": released, "state": self.plan.state if self.plan else None},
        )
        await self.intake.settle(released=ids)
        return released

    # ------------------------------------------------------------------ intake

    def backlog_limit(self) -> int:
        """Claimed-but-unsent messages this pod may hold (``ratelimit.backlog_limit``).

        Deep enough to keep the senders busy, shallow enough that pods sharing a
        plan share its work (a pod must not sit on minutes of someone else's sends)
        and that lease renewals stay cheap.
        """
        per_call = MAX_ENTRIES if self.bulk_plan is not None else 1
        floor = self.settings.worker_concurrency * per_call * 2
        rate = self.meter.update(self.path.sent, time.monotonic())
        return backlog_limit(self.pacer.plan_rate, rate, floor)

    def _room(self) -> int:
        """How many more messages to take now: none while the database does not answer, so SQS
        work is not received (and its receive count raised towards the DLQ) only to be put back."""
        if not self.sendable() or self.compiled is None or time.monotonic() - self.plan_read_at > DB_QUIET:
            return 0
        return max(0, self.backlog_limit() - len(self.leases))

    def _hold(self, taken: Taken) -> None:
        for held in self.leases.add(taken.claimed, taken.asked_at):
            self.sendq.put_nowait(held)
        self._show_backlog()

    def _show_backlog(self) -> None:
        BACKLOG.set(max(0, len(self.leases) - self.in_flight))

    async def poll_loop(self) -> None:
        """Receive work when sendable and not over the backlog limit; claim it in the ledger."""
        while not self.stopping.is_set():
            room = self._room()
            if not room:
                await pause(self.stopping, 0.2)
                continue
            started = time.monotonic()
            try:
                taken = await self.intake.receive(room)
            except OUTAGE as exc:
                log.warning("cannot receive work, retrying", extra={"error": type(exc).__name__})
                await pause(self.stopping, 1.0)
                continue
            self.queue_empty = taken is None
            if taken is None:
                if time.monotonic() - started < 0.5:
                    await pause(self.stopping, 0.5)  # no queue (yet) or no long poll: do not spin
                continue
            self._hold(taken)
            if taken.outage:
                await pause(self.stopping, 1.0)

    async def sweep_loop(self) -> None:
        """On its own short period: reclaim what dead pods held; exit when idle if asked to."""
        delay = self.settings.sweep_seconds
        while not self.stopping.is_set():
            await pause(self.stopping, delay)
            delay = self.settings.sweep_seconds
            room = self._room()
            try:
                if room and self.db_settled():
                    stale = max(5.0, self.settings.lease_seconds) if self.queue_empty else NEVER_STALE
                    below = self.plan.released_below if self.plan is not None else 0
                    taken = await self.intake.sweep(
                        min(room, 1000), stale_seconds=stale, released_below=below
                    )
                    self._hold(taken)
                    if taken.claimed:
                        # More may be waiting (a dead pod held many): again as soon as there is
                        # room, not a whole period later, so they go at the plan's rate.
                        delay = SWEEP_AGAIN_SECONDS
                        continue
                if self.queue_empty or not self.sendable():
                    await self.exit_if_finished()
            except OUTAGE as exc:
                log.warning("orphan sweep failed, retrying", extra={"error": type(exc).__name__})

    async def exit_if_finished(self) -> None:
        if not self.exit_when_idle or len(self.leases) or self.writer.pending:
            return
        counts = await plans.get_counts(self.engine, self.plan_id) or {}
        plan = self.plan
        finished = plan is not None and (
            PlanState(plan.state).finished
            or (
                plan.recipients_complete
                and counts.get("created", 0) == 0
                and counts.get("processing", 0) == 0
            )
        )
        if finished:
            log.info("plan has nothing left to send; exiting (--exit-when-idle)")
            self.stopping.set()

    async def heartbeat_loop(self) -> None:
        """Renew the ledger leases and the SQS visibility of everything held, every quarter lease."""
        period = self.leases.heartbeat_seconds
        while not self.stopping.is_set():
            await pause(self.stopping, period)
            if self.stopping.is_set():
                return
            try:
                lost = await self.leases.renew()
                if lost:
                    await self.intake.settle(written=lost)  # another pod holds them now
            except OUTAGE as exc:
                log.warning("cannot renew leases", extra={"error": type(exc).__name__})
            try:
                await self.intake.extend_visibility()
            except OUTAGE as exc:
                log.warning("cannot extend SQS visibility", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ sending

    async def send_loop(self) -> None:
        """One of ``worker_concurrency`` send slots; a ``None`` in the queue tells it to stop."""
        while True:
            held = await self.sendq.get()
            if held is None:
                return
            if held.claimed.id not in self.leases:
                continue
            bulk = self.bulk_plan
            batch = [held] if bulk is None else [held, *self._more(MAX_ENTRIES - 1)]
            self.in_flight += len(batch)
            IN_FLIGHT.inc(len(batch))
            try:
                await (self.raw.send(held) if bulk is None else self.bulk.send(bulk, batch))
            except OUTAGE as exc:  # nobody's message is at fault: held again, sent when it is back
                log.warning("cannot send now, holding the messages", extra={"error": type(exc).__name__})
                self.parked.extend(self._still_ours(batch))
            except Exception as exc:  # noqa: BLE001 - a bug met by these messages: they fail, the slot goes on
                self.fail_unexpected(batch, exc)
            finally:
                self.in_flight -= len(batch)
                IN_FLIGHT.dec(len(batch))
                self._show_backlog()

    def fail_unexpected(self, batch: list[Held], exc: Exception) -> None:
        """Poison isolation: an error nobody expected while sending ``batch`` fails the messages
        of it that are still ours, each with the error as its reason, and the slot goes on."""
        log.error(
            "unexpected error sending; failing these messages",
            exc_info=exc,
            extra={"plan": str(self.plan_id), "message_ids": [h.claimed.id for h in batch][:10]},
        )
        reason = failure_reason(exc)
        for held in self._still_ours(batch):
            FAILED.labels("internal").inc()
            self.writer.put(sendresults.SendResult(held.claimed.id, "failed", error=reason))

    def _still_ours(self, batch: list[Held]) -> list[Held]:
        """The messages of ``batch`` still held and without an outcome on its way to the ledger."""
        written = self.writer.pending_ids()
        return [h for h in batch if h.claimed.id in self.leases and h.claimed.id not in written]

    def _more(self, most: int) -> list[Held]:
        """Up to ``most`` more held messages already waiting (a bulk call never waits to fill)."""
        out: list[Held] = []
        while len(out) < most and not self.sendq.empty():
            item = self.sendq.get_nowait()
            if item is None:
                self.sendq.put_nowait(None)  # the stop signal is for a slot: leave it there
                break
            if item.claimed.id in self.leases:
                out.append(item)
        return out

    async def pick_fresh(self, msg: claims.Claimed) -> CompiledPlan | None:
        """The variant of ``msg`` by the plan as it is now: the update that chose the winner
        queues the rest of the list at once, so its rows can be claimed before the plan loop
        has read the winner (it reads once a second)."""
        undecided_at = time.monotonic()
        async with self._plan_lock:  # messages found undecided together share one read
            if self.plan_read_began < undecided_at:
                try:
                    await self.refresh_plan()
                except OUTAGE:
                    return None
        return self.compiled.pick(msg.bucket) if self.compiled is not None else None

    async def give_back_undecided(self, held: Held) -> None:
        """A recipient outside the A/B test cohort while no winner is chosen: never sent.

        A correct operator does not release such rows; if one was released anyway it goes
        back unsent and off the queue (its SQS work is finished), and waits until a plan
        update with a winner queues it again.
        """
        msg = held.claimed
        self.undecided += 1
        if time.monotonic() - self._undecided_logged >= UNDECIDED_LOG_SECONDS:
            self._undecided_logged = time.monotonic()
            log.warning(
                "no variant decided for this recipient (outside the A/B test cohort, no winner yet); "
                "given back unsent until a plan update chooses the winner",
                extra={"plan": str(self.plan_id), "message_id": msg.id, "given_back": self.undecided},
            )
        try:
            await claims.release(self.engine, self.plan_id, [msg.id], self.owner, unqueue=True)
        except OUTAGE:
            self.parked.append(held)  # the plan loop sends it round again (or releases it) later
            return
        self.leases.drop([msg.id])
        await self.intake.settle(written=[msg.id])

    # ------------------------------------------------------------------ write-back

    def _written(self, results: Sequence[sendresults.SendResult]) -> None:
        """A batch is in the ledger: the messages are no longer ours; their SQS work can go."""
        ids = [r.id for r in results]
        self.leases.drop(ids)
        self._to_ack.extend(ids)
        self._ack_wake.set()

    async def ack_loop(self) -> None:
        """Delete SQS work whose ids are all written (apart from the writer: SQS never slows writes)."""
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await self._ack_now()

    async def _ack_now(self) -> None:
        ids, self._to_ack = self._to_ack, []
        await self.intake.settle(written=ids)

    async def stats_loop(self) -> None:
        last_sent, last_t = 0, time.monotonic()
        while not self.stopping.is_set():
            await pause(self.stopping, 10)
            with contextlib.suppress(*OUTAGE):
                visible, _ = await self._queue.depth(self.plan_id)
                QUEUE_VISIBLE.set(visible)
            now = time.monotonic()
            log.info(
                "progress",
                extra={
                    "plan": str(self.plan_id),
                    "sent": self.path.sent,
                    "rate": round((self.path.sent - last_sent) / max(now - last_t, 1e-6), 2),
                    "held": len(self.leases),
                    "plan_rate": self.pacer.plan_rate,
                    "send_limit": round(self.pacer.limit.rate, 2),
                },
            )
            last_sent, last_t = self.path.sent, now

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        if self.pacer.account_rate is None:
            self.pacer.account_rate = await self.ses.max_send_rate()
        log.info(
            "worker starting",
            extra={"plan": str(self.plan_id), "owner": self.owner, "account_rate": self.pacer.account_rate},
        )
        await retry_forever(self.refresh_plan, "read plan", self.stopping)
        await retry_forever(self.leases.take_back_slot, "take back the slot's leases", self.stopping)
        with contextlib.suppress(TimeoutError):  # the account first: a used-up quota sends nothing
            await asyncio.wait_for(self.account.refresh(), timeout=ACCOUNT_FIRST_READ_SECONDS)
        tasks = [
            asyncio.create_task(self.plan_loop(), name="plan"),
            asyncio.create_task(self.poll_loop(), name="poll"),
            asyncio.create_task(self.sweep_loop(), name="sweep"),
            asyncio.create_task(self.heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self.stats_loop(), name="stats"),
            asyncio.create_task(self.account.run(self.stopping), name="account"),
        ]
        writers = [
            asyncio.create_task(self.writer.run(), name="writer"),
            asyncio.create_task(self.ack_loop(), name="ack"),
        ]
        senders = [
            asyncio.create_task(self.send_loop(), name=f"send-{i}")
            for i in range(self.settings.worker_concurrency)
        ]
        stop_wait = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait(
            [*tasks, *writers, *senders, stop_wait], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                log.error("worker task crashed", exc_info=task.exception())
                self.crashed = True
                self.stopping.set()
        await self.shutdown(tasks, writers, senders)

    async def shutdown(
        self,
        tasks: list[asyncio.Task[None]],
        writers: list[asyncio.Task[None]],
        senders: list[asyncio.Task[None]],
    ) -> None:
        log.info("stopping: finishing sends in flight", extra={"in_flight": self.in_flight})
        self.stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Senders stop before anything still queued: queued messages are parked (released below).
        while not self.sendq.empty():
            item = self.sendq.get_nowait()
            if item is not None:
                self.parked.append(item)
        for _ in senders:
            self.sendq.put_nowait(None)
        grace = self.settings.shutdown_grace_seconds
        try:
            await asyncio.wait_for(asyncio.gather(*senders, return_exceptions=True), grace)
        except TimeoutError:
            log.warning("sends still running at the end of the grace period")
        await self.writer.flush(deadline=time.monotonic() + grace)
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        with contextlib.suppress(*OUTAGE):
            await self._ack_now()
        # Everything still held and not written is unsent: give it back, and its SQS work with it.
        pending = self.writer.pending_ids()
        self.parked = [
            h for i in self.leases.ids() if i not in pending and (h := self.leases.get(i)) is not None
        ]
        await retry_until(lambda: self.release_parked(drain=False), "release held messages", 10.0)
        await self.intake.give_back_all()
        log.info("worker stopped", extra={"sent": self.path.sent, **self.pacer.stats})

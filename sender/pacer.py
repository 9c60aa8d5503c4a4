"""The pacer: send permits for one pod, from the plan's shared bucket, at the rate SES accepts.

Two limits in a row: a local token bucket at the rate SES accepts (``ratelimit.SendLimit``,
the configured rate unless SES throttles), then the plan's shared PostgreSQL bucket
(``pacing.take_tokens``), so every pod of a plan together holds the plan's rate and all
plans together the account's MaxSendRate. The pacer knows nothing of the worker: it is
told the demand (how many permits could be used now) and when to stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND
from emailplan.sender.accountgate import AccountGate
from emailplan.sender.outage import OUTAGE
from emailplan.sender.ratelimit import TOKEN_TTL, Bucket, SendLimit, grant_want, refill, take, wait_time
from emailplan.sender.store import pacing
from emailplan.sender.workermetrics import FACTOR, RATE

log = logging.getLogger("emailplan.worker")

# Shared-bucket grants: about GRANT_HORIZON seconds of the plan's rate at a time, at most one
# grant per GRAB_INTERVAL while the bucket is drained, unused tokens returned to the bucket
# after TOKEN_TTL (ratelimit). Together they bound how far pods can burst above the rate.
GRANT_HORIZON = 0.2
GRAB_INTERVAL = 0.05


class Pacer:
    """``acquire()`` one permit per email; ``observe()`` every SES answer (throttled or not)."""

    def __init__(
        self,
        engine: AsyncEngine,
        plan_id: uuid.UUID,
        *,
        account_rate: float | None,
        demand: Callable[[], int],
        stopping: asyncio.Event,
        plan_rate: float = DEFAULT_RATE_PER_SECOND,
        gate: AccountGate | None = None,
    ) -> None:
        self._engine = engine
        self._plan_id = plan_id
        self.account_rate = account_rate
        self._demand = demand
        self._stopping = stopping
        self._gate = gate  # the account's 24-hour quota and standing (None: not enforced here)
        self.limit = SendLimit(configured=plan_rate)
        self._tokens = 0.0
        self._lock = asyncio.Lock()
        self._local = Bucket(tokens=1.0, rate=plan_rate, burst=max(1.0, plan_rate * 0.25))
        self._last = time.monotonic()
        self._next_grab = 0.0
        self._tokens_until = 0.0
        self._give_back = 0
        self._grabbing: asyncio.Task[bool] | None = None  # the one grant request in flight
        self._low_water = 1.0  # half the last grant: below it the next grant is asked for ahead
        self._grant_seconds = 0.0  # how long a grant takes (smoothed): ask that much ahead of expiry
        self.stats = {"grants": 0, "granted": 0.0, "returned": 0.0, "grant_seconds": 0.0}
        RATE.set(plan_rate)

    @property
    def plan_rate(self) -> float:
        return self.limit.configured

    def set_plan_rate(self, rate: float) -> None:
        if rate != self.limit.configured:
            log.info("plan rate changed", extra={"plan": str(self._plan_id), "rate": rate})
            self.limit = self.limit.configure(rate)
            RATE.set(rate)
            FACTOR.set(self.limit.rate / rate)

    def observe(self, *, throttled: bool) -> None:
        """One SES answer: the limit follows what SES accepts."""
        before = self.limit.rate
        self.limit = self.limit.observe(throttled=throttled, now=time.monotonic())
        if self.limit.rate != before:
            FACTOR.set(self.limit.rate / self.limit.configured)

    def _pace(self) -> float:
        """Seconds to wait for the local bucket (the rate SES accepts)."""
        now = time.monotonic()
        rate = self.limit.rate
        self._local = refill(Bucket(self._local.tokens, rate, max(1.0, rate * 0.25)), now - self._last)
        self._last = now
        self._local, got = take(self._local, 1)
        return 0.0 if got else max(0.001, wait_time(self._local, 1))

    async def acquire(self) -> bool:
        """Wait for one send permit; False when stopping (nothing taken)."""
        async with self._lock:
            while not self._stopping.is_set():
                delay = self._pace()
                if not delay:
                    break
                await asyncio.sleep(delay)
            if self._stopping.is_set():
                return False
            if self._tokens >= 1 and time.monotonic() > self._tokens_until:
                # Tokens not spent in time go back to the shared bucket with the next grant
                # (spending them late could burst above the rate; dropping them wastes it).
                self._give_back += int(self._tokens)
                self.stats["returned"] += int(self._tokens)
                self._tokens = 0.0
            while self._tokens < 1:
                if self._stopping.is_set():
                    return False
                wait = self._next_grab - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if not await self._grab_shared():
                    await asyncio.sleep(1.0)
            self._tokens -= 1
            self._ask_ahead()
            return True

    def try_acquire(self) -> bool:
        """One more permit without waiting (a bulk call filling up), or False.

        Only what is already here counts: a token of the local bucket and one of this pod's
        unexpired grant. Never waits and never asks PostgreSQL, so a bulk call grows to the
        permits on hand and the rest of its batch goes in the next call. It does not wait for
        the lock either: a slot waiting in ``acquire`` for the next grant must not keep the
        tokens already here from the calls being filled (the event loop runs one at a time, so
        the counts cannot change under it).
        """
        if self._stopping.is_set():
            return False
        if self._tokens < 1 or time.monotonic() > self._tokens_until:
            return False
        if self._pace():
            return False
        self._tokens -= 1
        self._ask_ahead()
        return True

    def _in_flight(self) -> bool:
        return self._grabbing is not None and not self._grabbing.done()

    async def _grab_shared(self) -> bool:
        """Wait for a grant: the one already asked for ahead, or a new one."""
        if not self._in_flight():
            self._grabbing = asyncio.create_task(self._grab())
        assert self._grabbing is not None
        return await asyncio.shield(self._grabbing)

    def _ask_ahead(self) -> None:
        """Below half a grant, ask for the next one now, so senders do not wait a database
        round trip at every grant (at 2,000 emails/s a grant lasts about as long as one takes
        on a busy machine). At most one request is in flight; tokens not spent in time still
        go back to the bucket, so asking ahead never lets a pod send above its share. Also
        ahead of the tokens' expiry: a pod that cannot spend a grant within ``TOKEN_TTL``
        would otherwise stop at every expiry for a round trip."""
        now = time.monotonic()
        if (
            (self._tokens < self._low_water or now > self._tokens_until - 2 * self._grant_seconds)
            and not self._in_flight()
            and time.monotonic() >= self._next_grab
            and self._demand() > self._tokens
            and not self._stopping.is_set()
        ):
            self._grabbing = asyncio.create_task(self._grab())

    async def _grab(self) -> bool:
        """One grant from the shared bucket; False when the database is away."""
        want = grant_want(self.limit.rate, GRANT_HORIZON, float(self._demand() + 1) - self._tokens)
        if self._gate is not None:
            allowed = self._gate.allowance()
            if allowed < 1:
                return False  # the account's quota is used up or SES paused it: ask again later
            want = min(want, float(allowed))
        back, self._give_back = self._give_back, 0
        got = 0.0
        try:
            t0 = time.monotonic()
            got, rate = await pacing.take_tokens(
                self._engine, self._plan_id, want, account_rate=self.account_rate, give_back=back
            )
            if self._gate is not None:
                # The account's quota, shared by every pod: what it does not allow goes back.
                cut = int(got) - await self._gate.reserve(int(got))
                self._give_back += cut
                got -= cut
        except OUTAGE as exc:
            self._give_back += int(got)
            self._give_back += back
            log.warning("rate bucket unavailable, retrying", extra={"error": type(exc).__name__})
            return False
        self._low_water = max(1.0, want / 2)
        took = time.monotonic() - t0
        self._grant_seconds = took if not self.stats["grants"] else (self._grant_seconds + took) / 2
        self.stats["grant_seconds"] += took
        self.stats["grants"] += 1
        self.stats["granted"] += got
        self.set_plan_rate(rate)
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
        return True

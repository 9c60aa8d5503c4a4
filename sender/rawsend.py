"""The raw send strategy: one SES SendEmail per message, rendered here.

The message is rendered with its A/B variant (by cohort bucket), waits for a valid lease
and one permit of the plan's shared bucket, and is sent; its answer is acted on by
``sendpath.SendPath.act`` exactly as each entry of a bulk call is. The outcome is waited
for (written), so a slot holds one message at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from emailplan.sender.leases import Held, LeaseState
from emailplan.sender.rendering import Campaign, CompiledPlan, RenderedEmail, render
from emailplan.sender.sendpath import SendPath, Tries
from emailplan.sender.ses import SesError
from emailplan.sender.sespolicy import Action, unexpected
from emailplan.sender.store import claims, sendresults
from emailplan.sender.workermetrics import SEND_SECONDS


@dataclass
class RawSender:
    """Sends one held message at a time; the worker says which campaign is current, picks a
    variant the plan has just decided, and takes back a message no variant is decided for."""

    path: SendPath
    campaign: Callable[[], Campaign | None]
    pick_fresh: Callable[[claims.Claimed], Awaitable[CompiledPlan | None]]
    give_back: Callable[[Held], Awaitable[None]]
    requeue: Callable[[Held], None]

    def _render(self, compiled: CompiledPlan, msg: claims.Claimed) -> RenderedEmail:
        return render(compiled, **self.path.recipient(msg))

    async def send(self, held: Held) -> None:
        """Send one message under its lease, act on SES's answer, and wait until the outcome is written."""
        msg = held.claimed
        campaign = self.campaign()
        if campaign is None:
            self.requeue(held)
            await asyncio.sleep(1.0)
            return
        compiled = campaign.pick(msg.bucket) or await self.pick_fresh(msg)
        if compiled is None:
            await self.give_back(held)
            return
        try:
            rendered = self._render(compiled, msg)
        except Exception as exc:  # noqa: BLE001 - one message's data never stops the worker
            await self.path.fail_render(msg.id, exc)
            return
        await self._call(held, rendered)

    async def _ready(self, held: Held, permit: bool) -> bool:
        """Wait until the message may go: sendable, under a valid lease, with its permit (one per
        email: retries keep it). False when it will not be sent now: parked or taken over."""
        path = self.path
        while True:
            if not path.sendable():
                path.park(held)  # suspended, stopped or SES paused: released, not sent
                return False
            lease = path.leases.state(held.claimed.id)
            if lease is LeaseState.LOST:
                return False  # another pod took it over after our lease ran out
            if lease is LeaseState.STALE:
                await asyncio.sleep(0.2)  # wait for the heartbeat to renew (or lose) it
                continue
            if permit:
                return True
            if not await path.pacer.acquire():
                path.park(held)  # stopping
                return False
            permit = True  # checked again (the wait may have been long) before the send

    async def _call(self, held: Held, rendered: RenderedEmail) -> None:
        """SendEmail until SES's answer is final; a retry waits for its delay and a valid lease."""
        path, msg, tries, permit = self.path, held.claimed, Tries(), False
        while await self._ready(held, permit):
            permit = True
            start = time.monotonic()
            error: SesError | None = None
            try:
                ses_id = await path.ses.send(rendered)
            except SesError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - unexpected: retried, then failed with its reason
                error = unexpected(exc)
            decision = path.act(error, tries)
            if decision.action is Action.SENT:
                SEND_SECONDS.observe(time.monotonic() - start)
                result = sendresults.SendResult(msg.id, "sent", ses_message_id=ses_id, at=datetime.now(UTC))
                await path.writer.write(result)
                return
            if decision.action is Action.FAIL:
                await path.writer.write(sendresults.SendResult(msg.id, "failed", error=decision.reason))
                return
            if decision.action is Action.HOLD_ACCOUNT:
                path.park(held)
                return
            await asyncio.sleep(decision.delay)

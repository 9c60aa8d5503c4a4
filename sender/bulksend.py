"""The bulk send slot: up to 50 held messages in one SES SendBulkEmail call.

One HTTP request per email costs more CPU than the whole per-email budget of a fast sender
(docs/benchmarks.md); with ``ses.sendApi: bulk`` a send slot takes a batch from its queue and
sends it in calls of up to ``bulkmail.MAX_ENTRIES``. Everything the per-message path
guarantees holds per entry: one permit of the plan's shared bucket per email (a call grows
only to the permits on hand, the rest goes in the next call), nothing sent whose lease may
have run out, and each entry's own status acted on by ``sespolicy`` (an entry throttled or
failed transiently is retried alone, a rejected one fails alone, a paused account parks the
batch). The stored template is created once per process and plan version, and again if SES
says it is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emailplan.sender.bulkmail import MAX_ENTRIES, BulkPlan, entry, request
from emailplan.sender.leases import Held, LeaseState
from emailplan.sender.sendpath import SendPath, Tries
from emailplan.sender.ses import TEMPLATE_NOT_FOUND, SesError
from emailplan.sender.sespolicy import Action, unexpected
from emailplan.sender.store import sendresults
from emailplan.sender.workermetrics import SEND_SECONDS

log = logging.getLogger("emailplan.worker")


@dataclass
class _Pending:
    """One message of a batch on its way: its entry, permit and retry counts."""

    held: Held
    entry: dict[str, Any]
    permit: bool = False
    tries: Tries = field(default_factory=Tries)
    not_before: float = 0.0


class BulkSender:
    """Sends batches for one worker through the shared ``SendPath`` (which says whether the
    plan may send and takes back what is parked: suspend, paused account, shutdown)."""

    def __init__(self, path: SendPath) -> None:
        self._path = path
        self._ses = path.ses
        self._pacer = path.pacer
        self._leases = path.leases
        self._writer = path.writer
        self._stored: set[str] = set()
        self._storing = asyncio.Lock()

    async def _store(self, plan: BulkPlan) -> None:
        if plan.template_name in self._stored:
            return
        async with self._storing:
            if plan.template_name not in self._stored:
                await self._ses.create_template(plan.template_name, plan.template_content())
                self._stored.add(plan.template_name)
                log.info("SES template stored", extra={"template": plan.template_name})

    async def send(self, plan: BulkPlan, batch: list[Held]) -> None:
        """Send ``batch`` (at most ``MAX_ENTRIES``); outcomes go to the writer (not waited for)."""
        pending = []
        for held in batch:
            msg = held.claimed
            try:
                item = entry(plan, **self._path.recipient(msg))
            except Exception as exc:  # noqa: BLE001 - one message's data never stops the slot
                await self._path.fail_render(msg.id, exc)
                continue
            pending.append(_Pending(held, item))
        while pending:
            if not self._path.sendable():
                for p in pending:
                    self._path.park(p.held)  # suspended, stopped or SES paused: released, not sent
                return
            pending = [p for p in pending if self._leases.state(p.held.claimed.id) is not LeaseState.LOST]
            now = time.monotonic()
            ready = [
                p
                for p in pending
                if p.not_before <= now and self._leases.state(p.held.claimed.id) is LeaseState.VALID
            ]
            if not ready:
                if pending:
                    wake = min([p.not_before for p in pending if p.not_before > now] or [now + 0.2])
                    await asyncio.sleep(max(0.01, min(0.2, wake - now)))
                continue
            if not await self._permits(ready):
                for p in pending:
                    self._path.park(p.held)  # stopping
                return
            call = [p for p in ready if p.permit][:MAX_ENTRIES]
            done = await self._call(plan, call)
            pending = [p for p in pending if p.held.claimed.id not in done]

    async def _permits(self, ready: list[_Pending]) -> bool:
        """Permits for the call: when no ready message holds one (retries keep theirs), wait for
        one; then as many more as are on hand. False when stopping."""
        need = [p for p in ready if not p.permit]
        have = len(ready) - len(need)
        if need and not have:
            if not await self._pacer.acquire():
                return False
            need[0].permit = True
            have, need = 1, need[1:]
        for p in need[: max(0, MAX_ENTRIES - have)]:
            if not self._pacer.try_acquire():
                break
            p.permit = True
        return True

    async def _call(self, plan: BulkPlan, call: list[_Pending]) -> set[int]:
        """One SendBulkEmail; returns the ids finished (written, failed or parked)."""
        start = time.monotonic()
        outcomes: list[SesError | str]
        try:
            await self._store(plan)
            outcomes = await self._ses.send_bulk(_request(plan, call))
        except SesError as exc:
            outcomes = [exc] * len(call)
        except Exception as exc:  # noqa: BLE001 - unexpected: retried, then failed with its reason
            outcomes = [unexpected(exc)] * len(call)
        SEND_SECONDS.observe(time.monotonic() - start)
        finished: set[int] = set()
        results: list[sendresults.SendResult] = []
        now = datetime.now(UTC)
        for p, outcome in zip(call, outcomes, strict=True):
            msg_id = p.held.claimed.id
            error = outcome if isinstance(outcome, SesError) else None
            if error is not None and error.code == TEMPLATE_NOT_FOUND:
                self._stored.discard(plan.template_name)
            decision = self._path.act(error, p.tries)
            if decision.action is Action.SENT:
                results.append(sendresults.SendResult(msg_id, "sent", ses_message_id=str(outcome), at=now))
                finished.add(msg_id)
            elif decision.action is Action.FAIL:
                results.append(sendresults.SendResult(msg_id, "failed", error=decision.reason))
                finished.add(msg_id)
            elif decision.action is Action.HOLD_ACCOUNT:
                self._path.park(p.held)
                finished.add(msg_id)
            else:
                p.not_before = time.monotonic() + decision.delay  # keeps its permit
        for result in results:
            self._writer.put(result)  # the slot goes on; the message is held until it is written
        return finished


def _request(plan: BulkPlan, call: list[_Pending]) -> dict[str, Any]:
    return request(plan, [p.entry for p in call])

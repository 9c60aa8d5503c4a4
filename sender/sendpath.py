"""The send pipeline's shared part: what every send strategy needs, and one SES answer acted on.

A send slot takes held messages and hands them to a strategy: ``rawsend.RawSender`` (one
SES SendEmail per message, rendered here) or ``bulksend.BulkSender`` (up to 50 messages in
one SendBulkEmail). Whatever the call, each message's own answer is acted on the same way,
here: ``sespolicy.decide`` says what to do, a sent or failed message gets its result, a
paused account holds the plan, a throttled or transient one is retried with its counts.
So the two strategies differ only in how they call SES.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from emailplan.sender.failtext import failure_reason
from emailplan.sender.leases import Held, Leases
from emailplan.sender.pacer import Pacer
from emailplan.sender.rendering import RecipientArgs, Signer
from emailplan.sender.results import ResultWriter
from emailplan.sender.ses import SesClient, SesError
from emailplan.sender.sespolicy import Action, Decision, decide
from emailplan.sender.store import claims, sendresults
from emailplan.sender.workermetrics import ACCOUNT_PAUSED, FAILED, PAUSED, RETRIES, SENT, THROTTLED

log = logging.getLogger("emailplan.worker")


@dataclass
class Tries:
    """One message's retries so far (``sespolicy.decide`` counts them against the limits)."""

    throttled: int = 0
    failed: int = 0


@dataclass(frozen=True)
class SendSettings:
    """The settings a strategy reads (from ``SenderSettings``)."""

    plan_id: uuid.UUID
    public_url: str
    max_attempts: int
    paused_backoff_seconds: float


@dataclass
class SendPath:
    """What the strategies share: SES, the pacer, the leases, the result writer and the
    worker's word on whether the plan may send (``sendable``) and where unsent messages go
    (``park``: released by the plan loop while not sendable, sent again when it is)."""

    settings: SendSettings
    ses: SesClient
    pacer: Pacer
    leases: Leases
    writer: ResultWriter
    sign: Signer
    sendable: Callable[[], bool]
    park: Callable[[Held], None]
    sent: int = field(default=0, init=False)
    paused_until: float = field(default=0.0, init=False)  # monotonic; SES said the account cannot send

    def recipient(self, msg: claims.Claimed) -> RecipientArgs:
        """What rendering needs of one claimed message (both strategies render the same way)."""
        return {
            "message_id": msg.id,
            "email": msg.email,
            "name": msg.name,
            "variables": msg.vars,
            "public_url": self.settings.public_url,
            "sign": self.sign,
        }

    def act(self, error: SesError | None, tries: Tries) -> Decision:
        """Act on one message's SES answer (``None``: sent): metrics, pacer, account pause and
        retry counts. The caller writes the result, parks the message or retries it."""
        decision = decide(
            error,
            throttled_before=tries.throttled,
            failed_before=tries.failed,
            max_attempts=self.settings.max_attempts,
        )
        if decision.action in (Action.SENT, Action.RETRY_THROTTLED):
            self.pacer.observe(throttled=decision.action is Action.RETRY_THROTTLED)
        if decision.action is Action.SENT:
            self.account_resumed()
            SENT.inc()
            self.sent += 1
        elif decision.action is Action.FAIL:
            FAILED.labels(decision.label).inc()
        elif decision.action is Action.HOLD_ACCOUNT:
            # Nobody's message is at fault: fail none, give them all back (the plan loop
            # releases what is parked while not sendable) and try again after a long pause.
            self.account_paused(decision.reason or "", str(error))
        elif decision.action is Action.RETRY_THROTTLED:
            THROTTLED.inc()
            tries.throttled += 1
        else:
            RETRIES.inc()
            tries.failed += 1
        return decision

    async def fail_render(self, msg_id: int, exc: Exception) -> None:
        """One message's data does not render: it fails with the reason, the slot goes on."""
        FAILED.labels("render").inc()
        await self.writer.write(sendresults.SendResult(msg_id, "failed", error=failure_reason(exc)))

    def account_paused(self, code: str, reason: str) -> None:
        """SES says the account (or configuration set) may not send: hold the plan for a while."""
        ACCOUNT_PAUSED.labels(code).inc()
        now = time.monotonic()
        if now < self.paused_until:
            return  # other sends in flight hit the same pause: one log line per pause
        self.paused_until = now + max(1.0, self.settings.paused_backoff_seconds)
        PAUSED.set(1)
        log.error(
            "SES account cannot send (sending paused or account suspended); holding the plan, "
            "releasing its messages unsent and trying again later",
            extra={
                "plan": str(self.settings.plan_id),
                "code": code,
                "reason": reason,
                "retry_in_s": self.settings.paused_backoff_seconds,
            },
        )

    def account_resumed(self) -> None:
        if self.paused_until:
            self.paused_until = 0.0
            PAUSED.set(0)
            log.info("SES account sends again; plan resumed", extra={"plan": str(self.settings.plan_id)})

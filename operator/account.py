"""Pure rule for the SES account every plan shares: its 24-hour quota and SES's review of it.

The data plane reports the account in the plan view (:class:`AccountView`); its pacer
already stops while the quota is used up or SES reviews the account. This rule makes
that visible on the EmailPlan: ``AccountQuota`` (False, reason ``QuotaExhausted``,
the message saying when sending resumes) and ``AccountHealthy`` (False, reason
``AccountProbation``, ``AccountShutdown`` or ``SendingDisabled``), a Warning Event when
either turns False and a Normal Event when it is over; while either holds a plan that
still has work, ``Ready`` is False with that reason. No I/O, no clock, no kopf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emailplan.contract.account import AccountView, EnforcementStatus
from emailplan.operator import rules as d
from emailplan.operator.rules import Event

QUOTA = "AccountQuota"
HEALTHY = "AccountHealthy"
QUOTA_EXHAUSTED = "QuotaExhausted"
_STANDING = {
    EnforcementStatus.PROBATION: (
        "AccountProbation",
        "SES put the account on probation (too many bounces or "
        "complaints): every plan is paused until SES reports it HEALTHY",
    ),
    EnforcementStatus.SHUTDOWN: (
        "AccountShutdown",
        "SES shut the account's sending down: every plan is paused; ask AWS Support to review it",
    ),
}
SENDING_DISABLED = (
    "SendingDisabled",
    "sending is disabled for the SES account (SendingEnabled false): every plan is paused",
)


@dataclass
class AccountVerdict:
    """The account's conditions, its Events, and the reason a plan waits (None: it does not)."""

    conditions: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    waiting: tuple[str, str] | None = None  # (reason, message) while the account holds plans back


def _quota(account: AccountView) -> tuple[str, str] | None:
    if not account.exhausted:
        return None
    when = d.format_time(account.resumes_at) if account.resumes_at else "when SES raises the quota"
    return (
        QUOTA_EXHAUSTED,
        f"the SES account's quota of {account.max_24_hour_send:g} recipients per {_window(account)} "
        f"is used up ({account.sent_in_window} sent, all plans); sending resumes by itself at {when}",
    )


def _window(account: AccountView) -> str:
    seconds = account.window_seconds
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def _standing(account: AccountView) -> tuple[str, str] | None:
    if account.enforcement_status.pauses:
        return _STANDING[account.enforcement_status]
    return None if account.sending_enabled else SENDING_DISABLED


def _was_false(status: Mapping[str, Any], kind: str) -> str | None:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind and c.get("status") == "False":
            return str(c.get("reason") or "")
    return None


def still_shown(status: Mapping[str, Any]) -> bool:
    """An account condition is still False on the plan: a plan that finished meanwhile (the
    account recovered and it sent the rest before the next pass) is judged once more, so the
    condition clears with its Normal Event instead of staying False on a completed plan."""
    return any(_was_false(status, kind) is not None for kind in (QUOTA, HEALTHY))


def judge(
    account: AccountView | None, status: Mapping[str, Any], now: datetime, generation: int
) -> AccountVerdict:
    """The ``AccountQuota`` and ``AccountHealthy`` conditions and Events (nothing when not reported)."""
    verdict = AccountVerdict()
    if account is None:
        return verdict
    previous = [dict(c) for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    checks = [
        (HEALTHY, _standing(account), "AccountHealthy", "the SES account may send again: sending resumes"),
        (QUOTA, _quota(account), "QuotaAvailable", "the SES account's quota has room again: sending resumes"),
    ]
    for kind, problem, ok_reason, ok_words in checks:
        was = _was_false(status, kind)
        if problem is None:
            verdict.conditions.append(
                d.condition(previous, kind, True, ok_reason, "", now=now, generation=generation)
            )
            if was is not None:
                verdict.events.append(Event("Normal", ok_reason, ok_words))
            continue
        reason, message = problem
        verdict.conditions.append(
            d.condition(previous, kind, False, reason, message, now=now, generation=generation)
        )
        if was != reason:
            verdict.events.append(Event("Warning", reason, message[:1000]))
        verdict.waiting = verdict.waiting or (reason, message)
    return verdict

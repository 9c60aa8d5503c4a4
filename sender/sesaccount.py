"""Read the SES account (v2 ``GetAccount``) and judge what it leaves for sending.

Observe: :func:`read_account` calls SES through the real aiobotocore client (the
endpoint is ``ses_account_endpoint_url``, else the SES or AWS endpoint). Decide:
:func:`account_view` is pure: the quota left is ``Max24HourSend`` minus the larger of
SES's ``SentLast24Hours`` and the ledger's own count (SES's figure lags, the ledger
misses sends from outside emailplan), and sending resumes when the oldest sends age
out of the window. The pacer and the API's plan view both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aiobotocore.session import get_session

from emailplan.contract.account import AccountView, EnforcementStatus
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store.quota import WindowUsage


@dataclass(frozen=True)
class SesAccount:
    """The figures of GetAccount that limit sending; ``max_24_hour_send`` None = unlimited."""

    enforcement_status: EnforcementStatus
    sending_enabled: bool
    max_24_hour_send: float | None
    max_send_rate: float | None
    sent_last_24_hours: float


def parse_account(answer: dict[str, object]) -> SesAccount:
    """GetAccount's answer as botocore parsed it (an unknown status reads as HEALTHY: SES adds names)."""
    quota = answer.get("SendQuota") or {}
    assert isinstance(quota, dict)
    status = str(answer.get("EnforcementStatus") or "HEALTHY").upper()
    most = float(quota.get("Max24HourSend", -1))
    rate = float(quota.get("MaxSendRate", 0))
    return SesAccount(
        enforcement_status=EnforcementStatus(status)
        if status in EnforcementStatus.__members__
        else EnforcementStatus.HEALTHY,
        sending_enabled=bool(answer.get("SendingEnabled", True)),
        max_24_hour_send=most if most >= 0 else None,
        max_send_rate=rate if rate > 0 else None,
        sent_last_24_hours=float(quota.get("SentLast24Hours", 0)),
    )


async def read_account(settings: SenderSettings) -> SesAccount:
    """One GetAccount call; raises botocore's errors (the caller keeps its last view)."""
    endpoint = settings.ses_account_endpoint_url or settings.ses_endpoint_url or settings.aws_endpoint_url
    async with get_session().create_client(
        "sesv2", region_name=settings.aws_region, endpoint_url=endpoint
    ) as ses:
        answer = await ses.get_account()
    return parse_account(dict(answer))


def account_view(account: SesAccount, usage: WindowUsage, window_seconds: int) -> AccountView:
    """What the account leaves: quota left and when sending resumes if none is."""
    sent = max(usage.sent, int(account.sent_last_24_hours))
    left = None if account.max_24_hour_send is None else max(0, int(account.max_24_hour_send) - sent)
    resumes = None
    if left == 0:
        # The ledger knows when its own oldest sends age out; sends it does not know of
        # (SES's count is larger) age out within one window at the latest.
        resumes = usage.frees_at or usage.now + timedelta(seconds=window_seconds)
    return AccountView(
        enforcement_status=account.enforcement_status,
        sending_enabled=account.sending_enabled,
        max_24_hour_send=account.max_24_hour_send,
        max_send_rate=account.max_send_rate,
        sent_in_window=sent,
        window_seconds=window_seconds,
        quota_left=left,
        resumes_at=resumes,
        observed_at=usage.now,
    )


def may_send(view: AccountView | None, now: datetime) -> bool:
    """Whether the account lets a plan take permits now (unknown: yes, SES still has the last word)."""
    if view is None:
        return True
    if view.enforcement_status.pauses or not view.sending_enabled:
        return False
    return not (view.exhausted and (view.resumes_at is None or view.resumes_at > now))

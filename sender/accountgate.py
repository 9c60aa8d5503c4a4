"""The account gate: permits stop while the account's 24-hour quota is used up or SES reviews it.

Every plan shares one SES account. The gate reads the account (``GetAccount``) every
``account_poll_seconds`` and the ledger's window count every :data:`USAGE_SECONDS`;
the pacer asks :meth:`AccountGate.allowance` before each grant from the shared bucket, so
all plans together stop at ``Max24HourSend`` and start again by themselves when the
oldest sends age out. Counting sends is not enough when processes send at the same moment
(each would spend what the last count left), so every grant is also *reserved* in the
ledger (:meth:`AccountGate.reserve`, ``store.quota.reserve``), which every pod shares.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract.account import AccountView
from emailplan.sender.outage import OUTAGE
from emailplan.sender.ratelimit import TOKEN_TTL
from emailplan.sender.sesaccount import SesAccount, account_view, may_send, read_account
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import quota

log = logging.getLogger("emailplan.account")

USAGE_SECONDS = 2.0  # how often the ledger's window count is refreshed while a quota applies
UNLIMITED = 1 << 30


class AccountGate:
    """The latest :class:`AccountView`, and how many permits the account still allows."""

    def __init__(self, engine: AsyncEngine, settings: SenderSettings) -> None:
        self._engine = engine
        self._settings = settings
        self.account: SesAccount | None = None
        self.view: AccountView | None = None
        self._read_at = -float("inf")
        self._failing = ""  # the kind of the last GetAccount failure ("" while it answers)
        self._full_until = 0.0  # a reservation found the quota used up: no grants before (monotonic)
        # How long after its grant a permit can still become a send SES counts: it is spent
        # within the pacer's token TTL, and SES has it within one request.
        self._slack = TOKEN_TTL + settings.ses_timeout_seconds

    async def refresh(self) -> AccountView | None:
        """Read SES (when due) and the ledger; keep the last view when either is away."""
        if time.monotonic() - self._read_at >= self._settings.account_poll_seconds:
            try:
                self._read_at = time.monotonic()
                self.account = await read_account(self._settings)
                self._failing = ""
            except (
                BotoCoreError,
                ClientError,
                ValueError,
                TypeError,
            ) as exc:  # unreadable answer: keep the last
                # Said once per kind of failure (a role without ses:GetAccount fails every poll).
                (log.warning if type(exc).__name__ != self._failing else log.debug)(
                    "cannot read the SES account", extra={"error": type(exc).__name__}
                )
                self._failing = type(exc).__name__
        if self.account is None:
            return self.view
        limit = None if self.account.max_24_hour_send is None else int(self.account.max_24_hour_send)
        try:
            usage = await quota.window_usage(
                self._engine, self._settings.quota_window_seconds, limit, slack_seconds=self._slack
            )
        except OUTAGE:
            return self.view
        before = self.view
        self.view = account_view(self.account, usage, self._settings.quota_window_seconds)
        if self.view.exhausted and (before is None or not before.exhausted):
            log.warning("account quota used up", extra={"resumes_at": str(self.view.resumes_at)})
        return self.view

    def allowance(self) -> int:
        """Permits the account allows now (0 while paused)."""
        if not may_send(self.view, datetime.now(UTC)) or time.monotonic() < self._full_until:
            return 0
        if self.view is None or self.view.quota_left is None:
            return UNLIMITED
        return self.view.quota_left

    async def reserve(self, permits: int) -> int:
        """Reserve ``permits`` taken from the rate bucket against the quota; returns how many
        may be spent (the rest go back)."""
        limit = None if self.account is None else self.account.max_24_hour_send
        if limit is None or permits < 1:
            return permits
        got = await quota.reserve(
            self._engine,
            permits,
            limit=int(limit),
            floor=0 if self.view is None else self.view.sent_in_window,
            window_seconds=self._settings.quota_window_seconds,
            slack_seconds=self._slack,
        )
        if got < 1:  # used up: ask again after the next count, not at every grant
            self._full_until = time.monotonic() + USAGE_SECONDS
        return got

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh until ``stopping``; often enough that a quota freeing up is seen within seconds."""
        while not stopping.is_set():
            await self.refresh()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=USAGE_SECONDS)
            except TimeoutError:
                pass

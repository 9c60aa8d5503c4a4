"""The SES account as a whole: the 24-hour quota every plan shares, and the account's standing.

SES enforces two things no single plan sees: ``Max24HourSend`` (recipients in any rolling
24 hours, all plans together) and the account's enforcement status (``PROBATION`` or
``SHUTDOWN`` after too many bounces or complaints). The data plane reads both (SES v2
``GetAccount``), counts its own sends in the window, and reports :class:`AccountView` in
the plan view; the operator turns it into the ``AccountReady`` condition.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

QUOTA_WINDOW_SECONDS = 24 * 3600  # SES's quota window; shorter only in development mode (tests)


class EnforcementStatus(StrEnum):
    """SES's ``EnforcementStatus`` (GetAccount); the value is SES's wire spelling."""

    HEALTHY = "HEALTHY"
    PROBATION = "PROBATION"
    SHUTDOWN = "SHUTDOWN"

    @property
    def pauses(self) -> bool:
        """Whether plans stop sending: a reviewed account must not make its record worse."""
        return self is not EnforcementStatus.HEALTHY


class AccountView(BaseModel):
    """What the data plane last read of the account and its own ledger.

    ``sent_in_window`` is the larger of SES's ``SentLast24Hours`` and the ledger's count
    (all plans); ``quota_left`` is None when the quota is unlimited (``Max24HourSend`` -1)
    and ``resumes_at`` is when enough of the oldest sends age out for sending to go on.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)

    enforcement_status: EnforcementStatus = EnforcementStatus.HEALTHY
    sending_enabled: bool = True
    max_24_hour_send: float | None = None
    max_send_rate: float | None = None
    sent_in_window: int = 0
    window_seconds: int = QUOTA_WINDOW_SECONDS
    quota_left: int | None = None
    resumes_at: datetime | None = None
    observed_at: datetime | None = None

    @property
    def exhausted(self) -> bool:
        return self.quota_left is not None and self.quota_left <= 0

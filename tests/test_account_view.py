"""The data plane's judgement of the SES account: GetAccount's answer and the ledger's count, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from emailplan.contract.account import EnforcementStatus
from emailplan.sender.sesaccount import account_view, may_send, parse_account
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store.quota import WindowUsage

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FREES = NOW + timedelta(hours=2)
DAY = 86400


def answer(most: float, sent: float, status: str = "HEALTHY", enabled: bool = True) -> dict[str, object]:
    quota = {"Max24HourSend": most, "MaxSendRate": 14.0, "SentLast24Hours": sent}
    return {"SendQuota": quota, "EnforcementStatus": status, "SendingEnabled": enabled}


@pytest.mark.parametrize(
    ("ses", "usage", "left", "resumes", "sends"),
    [
        (answer(100, 10), WindowUsage(20, NOW), 80, None, True),  # the ledger's count is larger
        (answer(100, 60), WindowUsage(20, NOW), 40, None, True),  # SES's count is larger
        (
            answer(100, 0),
            WindowUsage(100, NOW, FREES),
            0,
            FREES,
            False,
        ),  # used up: resumes when the oldest age out
        (
            answer(100, 150),
            WindowUsage(10, NOW),
            0,
            NOW + timedelta(seconds=DAY),
            False,
        ),  # sends it never saw
        (answer(-1, 5000), WindowUsage(5000, NOW), None, None, True),  # unlimited
        (answer(100, 0, "PROBATION"), WindowUsage(0, NOW), 100, None, False),
        (answer(100, 0, "SHUTDOWN"), WindowUsage(0, NOW), 100, None, False),
        (answer(100, 0, enabled=False), WindowUsage(0, NOW), 100, None, False),
        (
            answer(100, 0, "SOMETHING_NEW"),
            WindowUsage(0, NOW),
            100,
            None,
            True,
        ),  # an unknown status reads as healthy
    ],
)
def test_account_view_table(
    ses: dict[str, object], usage: WindowUsage, left: int | None, resumes: datetime | None, sends: bool
) -> None:
    view = account_view(parse_account(ses), usage, DAY)
    assert view.quota_left == left and view.resumes_at == resumes
    assert may_send(view, NOW) is sends
    if resumes is not None:
        assert may_send(view, resumes + timedelta(seconds=1))  # past the resume time, until the next count


def test_enforcement_status_names_are_ses_wire_names() -> None:
    assert parse_account(answer(1, 0, "PROBATION")).enforcement_status is EnforcementStatus.PROBATION


def test_a_short_quota_window_needs_dev_mode() -> None:
    with pytest.raises(ValidationError, match="quota_window_seconds"):
        SenderSettings(quota_window_seconds=60, dev_mode=False)
    assert SenderSettings(quota_window_seconds=60, dev_mode=True).quota_window_seconds == 60

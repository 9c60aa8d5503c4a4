"""The SES account every plan shares, on the EmailPlan: the pure rule and the reconcile pass using it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from support.decisions import NOW, observed, view

from emailplan.contract.account import AccountView, EnforcementStatus
from emailplan.contract.plans import PlanState
from emailplan.operator import account as accounts
from emailplan.operator.decide import decide

SENDING = {"total": 3000, "created": 2000, "sent": 1000}
RESUMES = NOW + timedelta(hours=3)


def acct(**kw: Any) -> AccountView:
    base: dict[str, Any] = {"max_24_hour_send": 5000.0, "sent_in_window": 1000, "quota_left": 4000}
    return AccountView(**{**base, **kw})


EXHAUSTED = acct(sent_in_window=5000, quota_left=0, resumes_at=RESUMES)


ACCOUNT_REASONS = {
    "QuotaExhausted",
    "QuotaAvailable",
    "AccountProbation",
    "AccountShutdown",
    "AccountHealthy",
}


def said(events: list[Any]) -> list[tuple[str, str]]:
    """The account's Events of a pass (the pass may also say other things, e.g. RecipientsLoaded)."""
    return [(e.type, e.reason) for e in events if e.reason in ACCOUNT_REASONS]


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


@pytest.mark.parametrize(
    ("account", "quota", "healthy", "waiting"),
    [
        (acct(), ("True", "QuotaAvailable"), ("True", "AccountHealthy"), None),
        (
            acct(max_24_hour_send=None, quota_left=None),
            ("True", "QuotaAvailable"),
            ("True", "AccountHealthy"),
            None,
        ),
        (EXHAUSTED, ("False", "QuotaExhausted"), ("True", "AccountHealthy"), "QuotaExhausted"),
        (
            acct(enforcement_status=EnforcementStatus.PROBATION),
            ("True", "QuotaAvailable"),
            ("False", "AccountProbation"),
            "AccountProbation",
        ),
        (
            acct(enforcement_status=EnforcementStatus.SHUTDOWN),
            ("True", "QuotaAvailable"),
            ("False", "AccountShutdown"),
            "AccountShutdown",
        ),
        (
            acct(sending_enabled=False),
            ("True", "QuotaAvailable"),
            ("False", "SendingDisabled"),
            "SendingDisabled",
        ),
        # Both: the account's standing is the one a plan waits for first (more serious, lasts longer).
        (
            EXHAUSTED.model_copy(update={"enforcement_status": EnforcementStatus.SHUTDOWN}),
            ("False", "QuotaExhausted"),
            ("False", "AccountShutdown"),
            "AccountShutdown",
        ),
    ],
)
def test_account_rule_table(
    account: AccountView, quota: tuple[str, str], healthy: tuple[str, str], waiting: str | None
) -> None:
    verdict = accounts.judge(account, {}, NOW, 1)
    got = {c["type"]: (c["status"], c["reason"]) for c in verdict.conditions}
    assert got == {"AccountQuota": quota, "AccountHealthy": healthy}
    assert (verdict.waiting[0] if verdict.waiting else None) == waiting
    assert sorted(e.reason for e in verdict.events) == sorted(r for s, r in (quota, healthy) if s == "False")
    assert all(e.type == "Warning" for e in verdict.events)


def test_not_reported_shows_nothing() -> None:
    verdict = accounts.judge(None, {}, NOW, 1)
    assert verdict.conditions == [] and verdict.events == [] and verdict.waiting is None


def test_exhausted_quota_holds_the_plan_with_its_resume_time_then_resumes() -> None:
    out = decide(observed(view=view(counts=SENDING).model_copy(update={"account": EXHAUSTED}), replicas=2))
    status = dict(out.status)
    assert conds(status)["AccountQuota"] == ("False", "QuotaExhausted")
    assert conds(status)["Ready"] == ("False", "QuotaExhausted")
    assert status["phase"] == "Sending" and out.replicas == 2  # pods stay: they resume by themselves
    assert "2026-05-01T15:00:00Z" in status["message"] and "5000" in status["message"]
    assert said(out.events) == [("Warning", "QuotaExhausted")]
    # The next pass: nothing new said.
    again = decide(
        observed(view=view(counts=SENDING).model_copy(update={"account": EXHAUSTED}), status=status)
    )
    assert again.events == []
    # The window moved on: room again, Ready, one Normal Event.
    later = decide(observed(view=view(counts=SENDING).model_copy(update={"account": acct()}), status=status))
    status = {**status, **later.status}
    assert conds(status)["AccountQuota"] == ("True", "QuotaAvailable")
    assert conds(status)["Ready"] == ("True", "Sending")
    assert said(later.events) == [("Normal", "QuotaAvailable")]


@pytest.mark.parametrize(
    ("status_", "reason"),
    [(EnforcementStatus.PROBATION, "AccountProbation"), (EnforcementStatus.SHUTDOWN, "AccountShutdown")],
)
def test_account_under_review_pauses_with_a_warning(status_: EnforcementStatus, reason: str) -> None:
    reviewed = acct(enforcement_status=status_)
    out = decide(observed(view=view(counts=SENDING).model_copy(update={"account": reviewed}), replicas=2))
    status = dict(out.status)
    assert conds(status)["AccountHealthy"] == ("False", reason)
    assert conds(status)["Ready"] == ("False", reason)
    assert "every plan is paused" in status["message"]
    assert said(out.events) == [("Warning", reason)]


def test_a_finished_plan_says_nothing_of_the_account() -> None:
    done = view(state=PlanState.DONE, counts={"total": 3, "sent": 3})
    done = done.model_copy(update={"account": EXHAUSTED})
    out = decide(observed(view=done))
    assert "AccountQuota" not in conds(dict(out.status))
    assert not [e for e in out.events if e.reason == "QuotaExhausted"]


def test_a_plan_that_finished_right_after_the_account_recovered_clears_the_condition() -> None:
    """SES says HEALTHY and the plan sends its rest before the next pass: the condition still
    clears with its Normal Event (it used to stay False on the completed plan, no Event)."""
    reviewed = acct(enforcement_status=EnforcementStatus.PROBATION)
    paused = decide(observed(view=view(counts=SENDING).model_copy(update={"account": reviewed})))
    done = view(state=PlanState.DONE, counts={"total": 3000, "sent": 3000})
    out = decide(observed(view=done.model_copy(update={"account": acct()}), status=dict(paused.status)))
    assert conds(dict(out.status))["AccountHealthy"] == ("True", "AccountHealthy")
    assert said(out.events) == [("Normal", "AccountHealthy")]

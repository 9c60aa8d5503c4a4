"""Failure reasons without servers: the short class of an error, and what the operator shows of them.

The class is what a person reads in ``status.failures`` and the ``Completed`` Event, so
messages failing the same way must share it whatever addresses their errors name, and
the Event must say why when anything failed.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.decisions import observed, view

from emailplan.contract.failures import MAX_REASON_CHARS, NO_DETAIL, failure_reason
from emailplan.contract.plans import PlanState
from emailplan.operator.decide import decide

SES_UNVERIFIED = (
    "MessageRejected: Email address is not verified. The following identities failed the check in "
    "region US-EAST-1: news@acme.test, Acme <news@acme.test>"
)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SES_UNVERIFIED, "MessageRejected: Email address is not verified"),
        (
            "MessageRejected: Did not have authority to send from email news@unverified.test",
            "MessageRejected: Did not have authority to send from email",
        ),
        (
            "MessageRejected: Email address not verified <ann@x.org>",
            "MessageRejected: Email address not verified",
        ),
        ("AccountSuspendedException", "AccountSuspendedException"),
        ("RenderError: subject: 'nmae' is undefined", "RenderError: subject: 'nmae' is undefined"),
        (
            "gave up after 5 attempts: InternalFailure: An internal failure occurred. Request 3f2a.",
            "gave up after 5 attempts: InternalFailure: An internal failure occurred",
        ),
        (
            "InvalidParameterValue: Missing final '@domain'\nat line 2",
            "InvalidParameterValue: Missing final '@domain'",
        ),
        ("", NO_DETAIL),
        (None, NO_DETAIL),
        ("   ", NO_DETAIL),
        ("ann@x.org", NO_DETAIL),
    ],
)
def test_the_reason_is_the_first_sentence_without_addresses(error: str | None, reason: str) -> None:
    assert failure_reason(error) == reason


def test_messages_failing_the_same_way_share_one_reason_of_bounded_length() -> None:
    errors = [SES_UNVERIFIED.replace("news@acme.test", f"n{i}@host{i}.test") for i in range(50)]
    assert len({failure_reason(e) for e in errors}) == 1
    assert len(failure_reason("X: " + "long words " * 500)) <= MAX_REASON_CHARS


# --- the operator: status.failures and the Completed Event --------------------------------------------

DONE = {"total": 10, "sent": 7, "failed": 2, "suppressed": 1}
UNVERIFIED = {"reason": "MessageRejected: Email address is not verified", "count": 2}
SUPPRESSED = {"reason": "Suppressed: bounce", "count": 1}


def _finish(counts: dict[str, int], failures: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    sending = {"phase": "Sending"}
    out = decide(observed(status=sending, view=view(state=PlanState.DONE, counts=counts, failures=failures)))
    return out, {**sending, **out.status}


def test_completed_with_failures_is_a_warning_naming_the_top_reason() -> None:
    out, status = _finish(DONE, [SUPPRESSED | {"count": 3}, UNVERIFIED])
    completed = [e for e in out.events if e.reason == "Completed"]
    assert len(completed) == 1 and completed[0].type == "Warning"
    # The top reason of the failed ones: suppressed addresses are the list doing its job.
    assert "top reason: MessageRejected: Email address is not verified (2)" in completed[0].message
    assert "2 failed" in completed[0].message
    assert status["failures"] == [SUPPRESSED | {"count": 3}, UNVERIFIED]


@pytest.mark.parametrize(
    ("counts", "failures"),
    [
        ({"total": 10, "sent": 10}, []),
        ({"total": 10, "sent": 9, "suppressed": 1}, [SUPPRESSED]),
    ],
)
def test_completed_without_failures_stays_normal(
    counts: dict[str, int], failures: list[dict[str, Any]]
) -> None:
    out, status = _finish(counts, failures)
    assert [(e.type, e.reason) for e in out.events if e.reason == "Completed"] == [("Normal", "Completed")]
    assert status.get("failures", []) == failures


def test_failures_are_patched_only_when_they_change() -> None:
    first = decide(
        observed(view=view(counts={"total": 10, "created": 8, "failed": 2}, failures=[UNVERIFIED]))
    )
    assert first.status["failures"] == [UNVERIFIED]
    status = dict(first.status)
    again = decide(
        observed(
            status=status, view=view(counts={"total": 10, "created": 8, "failed": 2}, failures=[UNVERIFIED])
        )
    )
    assert "failures" not in again.status
    more = UNVERIFIED | {"count": 3}
    changed = decide(
        observed(status=status, view=view(counts={"total": 10, "created": 7, "failed": 3}, failures=[more]))
    )
    assert changed.status["failures"] == [more]
    # A plan with nothing failed carries no empty list in its status.
    assert "failures" not in decide(observed(view=view(counts={"total": 10, "created": 10}))).status
    # The data plane out of reach: the last known reasons stay.
    assert "failures" not in decide(observed(status=status)).status

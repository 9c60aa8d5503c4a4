"""The worker's SES answer policy (pure): what each kind of answer does to a message."""

from __future__ import annotations

import random

import pytest

from emailplan.sender.failtext import failure_reason
from emailplan.sender.ses import (
    SesError,
    SesPausedError,
    SesPermanentError,
    SesThrottledError,
    SesTransientError,
)
from emailplan.sender.sespolicy import Action, decide, unexpected


@pytest.mark.parametrize(
    ("error", "throttled_before", "failed_before", "action", "label"),
    [
        (None, 0, 0, Action.SENT, ""),
        (None, 5, 3, Action.SENT, ""),  # retried, then accepted
        (SesThrottledError("TooManyRequestsException", "rate"), 0, 0, Action.RETRY_THROTTLED, ""),
        # throttling never fails a message, however often it happens
        (SesThrottledError("Throttling", "rate"), 50, 4, Action.RETRY_THROTTLED, ""),
        (SesPausedError("SendingPausedException", "paused"), 0, 0, Action.HOLD_ACCOUNT, ""),
        (SesPermanentError("MessageRejected", "bad"), 0, 0, Action.FAIL, "MessageRejected"),
        (SesTransientError("ServiceUnavailable", "x"), 0, 0, Action.RETRY_TRANSIENT, ""),
        (SesTransientError("ServiceUnavailable", "x"), 3, 3, Action.RETRY_TRANSIENT, ""),
        (SesTransientError("ServiceUnavailable", "x"), 0, 4, Action.FAIL, "transient"),  # 5th of 5
    ],
)
def test_decide(
    error: SesError | None, throttled_before: int, failed_before: int, action: Action, label: str
) -> None:
    d = decide(
        error,
        throttled_before=throttled_before,
        failed_before=failed_before,
        max_attempts=5,
        rng=random.Random(1),
    )
    assert d.action is action and d.label == label
    if action is Action.FAIL:
        assert d.reason and (error is not None and error.code in d.reason)
    if action is Action.HOLD_ACCOUNT:
        assert d.reason == "SendingPausedException"


def test_retry_delays_grow_and_stay_capped() -> None:
    rng = random.Random(2)
    throttle = [
        decide(
            SesThrottledError("Throttling", ""), throttled_before=k, failed_before=0, max_attempts=5, rng=rng
        ).delay
        for k in range(12)
    ]
    assert throttle[0] <= 0.2 and max(throttle) <= 10 and throttle[-1] >= 3.2
    transient = [
        decide(
            SesTransientError("InternalFailure", ""),
            throttled_before=0,
            failed_before=k,
            max_attempts=99,
            rng=rng,
        ).delay
        for k in range(12)
    ]
    assert transient[0] <= 0.5 and max(transient) <= 30 and transient[-1] >= 15


@pytest.mark.parametrize(
    "error",
    [
        SesPermanentError("MessageRejected", "bad\x00address \ud800 here\r\nnext"),
        SesTransientError("InternalFailure", "boom\x00"),
    ],
)
def test_failure_reasons_are_storable_text(error: SesError) -> None:
    """A reason PostgreSQL refuses (NUL, a lone surrogate) would hold up every result written with it."""
    decision = decide(error, throttled_before=0, failed_before=9, max_attempts=1)
    assert decision.action is Action.FAIL and decision.reason
    assert "\x00" not in decision.reason and "\n" not in decision.reason
    decision.reason.encode("utf-8")  # no lone surrogate
    assert error.code in decision.reason


def test_an_unexpected_error_is_transient_and_fails_with_its_class() -> None:
    error = unexpected(KeyError("MessageId\x00"))
    assert isinstance(error, SesTransientError)
    decision = decide(error, throttled_before=0, failed_before=2, max_attempts=3)
    assert decision.action is Action.FAIL and decision.reason is not None
    assert (
        decision.reason.startswith("gave up after 3 attempts: KeyError: ") and "\x00" not in decision.reason
    )
    assert failure_reason(UnicodeEncodeError("ascii", "ü", 0, 1, "no")).startswith("UnicodeEncodeError: ")

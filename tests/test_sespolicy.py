"""The worker's SES answer policy (pure): what each kind of answer does to a message."""

from __future__ import annotations

import random

import pytest

from emailplan.sender.ses import (
    SesError,
    SesPausedError,
    SesPermanentError,
    SesThrottledError,
    SesTransientError,
)
from emailplan.sender.sespolicy import Action, decide


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

"""What the worker does with one SES answer: a pure function, table-tested.

Four kinds of failure come from ``ses.classify``; each maps to one action. Kept apart
from the worker so the policy is read (and tested) in one place: throttling and
transient errors never fail a message on their own, a paused account fails nothing,
only a permanent refusal or too many transient errors fail it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from emailplan.contract.followups import TRANSIENT_FAILURE_PREFIX
from emailplan.contract.headers import one_line
from emailplan.sender.failtext import reason_text
from emailplan.sender.ratelimit import backoff
from emailplan.sender.ses import (
    SesError,
    SesPausedError,
    SesPermanentError,
    SesThrottledError,
    SesTransientError,
)


class Action(StrEnum):
    SENT = "sent"
    FAIL = "fail"  # record ``failed`` with ``reason``
    RETRY_THROTTLED = "retry_throttled"  # SES is over its rate: slow down, retry after ``delay``
    RETRY_TRANSIENT = "retry_transient"  # network / 5xx: retry after ``delay``
    HOLD_ACCOUNT = "hold_account"  # the account may not send: give the message back, pause the plan


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str | None = None  # the message's error (FAIL) or the SES code (HOLD_ACCOUNT)
    label: str = ""  # metric label of a failure


def decide(
    error: SesError | None,
    *,
    throttled_before: int,
    failed_before: int,
    max_attempts: int,
    rng: random.Random | None = None,
) -> Decision:
    """The action for one answer, given how often this message was throttled or failed before."""
    if error is None:
        return Decision(Action.SENT)
    if isinstance(error, SesThrottledError):
        delay = backoff(min(throttled_before + 1, 6), base=0.2, cap=10, rng=rng)
        return Decision(Action.RETRY_THROTTLED, delay)
    if isinstance(error, SesPausedError):
        return Decision(Action.HOLD_ACCOUNT, reason=error.code)
    if isinstance(error, SesPermanentError):
        return Decision(Action.FAIL, reason=reason_text(str(error)), label=error.code)
    tries = failed_before + 1
    if tries >= max_attempts:
        reason = reason_text(f"{TRANSIENT_FAILURE_PREFIX}{tries} attempts: {error}")  # what a retry retries
        return Decision(Action.FAIL, reason=reason, label="transient")
    return Decision(Action.RETRY_TRANSIENT, backoff(tries, base=0.5, cap=30, rng=rng))


def unexpected(exc: Exception) -> SesError:
    """An error from sending that is not a ``SesError`` (a bug met by one message): transient,
    so the message is retried with backoff and then fails with it as its reason, and the send
    slot goes on."""
    return SesTransientError(type(exc).__name__, one_line(str(exc))[:200])

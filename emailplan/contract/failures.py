"""Why a message was not sent: its reason class, and the page of failed addresses the API lists.

A failed message keeps two texts in the ledger: ``error``, the whole detail (SES's
message with the identities it names, a template error with its line), and
``reason``, the short class that messages failing the same way share, so a plan can
say "2 failed: MessageRejected: Email address is not verified" instead of a count.
The class is made here, once, from the detail the sender writes (SES ``Code:
message``, ``RenderError: ...``, ``gave up after N attempts: ...``): its first
sentence without the addresses it names, so a thousand refusals are one reason.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from emailplan.contract.wire import Wire

MAX_REASON_CHARS = 200
DEFAULT_FAILURE_PAGE = 100
MAX_FAILURE_PAGE = 1000
NO_DETAIL = "failed (no detail recorded)"

# An address as SES and our own errors quote it (``<a@b.c>``, ``a@b.c``, ``"a@b.c"``).
_ADDRESS = re.compile(r"""[<"']?[^\s<>@"',;]+@[^\s<>@"',;]+[>"']?""")
# The end of the first sentence: a full stop, semicolon or newline followed by more text.
_SENTENCE_END = re.compile(r"[.;]\s|\n")


def failure_reason(error: str | None) -> str:
    """The short class of a failure's detail: first sentence, addresses removed, at most 200 chars.

    ``MessageRejected: Email address is not verified. The following identities failed
    the check in region US-EAST-1: news@acme.test`` → ``MessageRejected: Email address
    is not verified``.
    """
    if not error or not error.strip():
        return NO_DETAIL
    text = _ADDRESS.sub("", error)
    text = _SENTENCE_END.split(text, maxsplit=1)[0]
    text = " ".join(text.split()).rstrip(" .:;,")
    return text[:MAX_REASON_CHARS] or NO_DETAIL


class MessageOutcome(StrEnum):
    """The final statuses of a message that was not sent."""

    FAILED = "failed"
    SUPPRESSED = "suppressed"


class FailedMessage(Wire):
    """One address of the plan that was not sent, with why and when."""

    email: str
    status: MessageOutcome
    reason: str
    detail: str | None = None  # the whole error text (None for a suppressed address)
    at: datetime | None = None  # when the message reached this status


class FailurePage(Wire):
    """``GET /v1/plans/{planId}/failures``: failed and suppressed messages in ledger order.

    ``next`` is the cursor of the following page (pass it as ``after``); null on the last.
    """

    items: list[FailedMessage] = Field(default_factory=list)
    next: str | None = None

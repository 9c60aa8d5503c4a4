"""The stored reason of a failed message (the ledger's ``error`` column). Pure.

What the operator reads to know why a message failed, so it names a class first, then the
detail: ``RenderError: ...``, ``InvalidAddress: ...``, an SES code, or the class of an
error nobody expected. The text is made storable here, once for every writer: a reason that
PostgreSQL refuses (a NUL, a lone surrogate from user data quoted in an error) would be
retried as an outage forever and hold up every result written with it.
"""

from __future__ import annotations

from emailplan.contract.headers import one_line

MAX_REASON = 1000


def reason_text(text: str) -> str:
    """``text`` as a stored reason: one line, no control characters, valid UTF-8, bounded."""
    return one_line(text).encode("utf-8", "replace").decode("utf-8")[:MAX_REASON]


def failure_reason(exc: BaseException) -> str:
    """The reason of a message that failed on ``exc``: its class, then the detail."""
    return reason_text(f"{type(exc).__name__}: {exc}")

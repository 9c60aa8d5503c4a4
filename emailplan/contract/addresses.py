"""The one address check every intake uses: recipients, suppressions, from and replyTo.

Strict RFC 5321 limits (64 characters before the ``@``, 254 in all) are enforced
here because SES refuses longer paths at send time, which would turn a bad row
into a failed message instead of a rejected row. Addresses are compared and
de-duplicated case-insensitively (lower-cased whole): mailbox providers treat the
local part that way in practice, and a list with ``Ann@x`` and ``ann@x`` must
not mail the same person twice.
"""

from __future__ import annotations

import email.utils

from email_validator import EmailNotValidError, validate_email

from emailplan.contract.headers import header_problem

MAX_LOCAL_PART = 64
MAX_ADDRESS = 254


class AddressError(ValueError):
    """Why a value is not an address we send to, in words for the list's owner."""


def normalize_address(value: str) -> str:
    """The stored form of a recipient address (lower-cased), or :class:`AddressError` naming the problem."""
    text = value.strip()
    if not text:
        raise AddressError("email is required")
    problem = header_problem(text)
    if problem:
        raise AddressError(f"email {problem}")
    if len(text) > MAX_ADDRESS:
        raise AddressError(f"email longer than {MAX_ADDRESS} characters")
    local, _, _ = text.rpartition("@")
    if len(local) > MAX_LOCAL_PART:
        raise AddressError(f"the part before @ is longer than {MAX_LOCAL_PART} characters")
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=True, strict=True)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid email address: {exc}") from exc
    return checked.normalized.lower()


def check_mailbox(value: str, field: str) -> list[str]:
    """Problems with a ``Name <addr@example.com>`` or bare address header value (empty: fine).

    The whole value is checked as a header first (no CR, LF or other control
    characters, no raw encoded words), so a display name can never smuggle a
    second header; then the address part must appear as written (``parseaddr``
    is lenient) and pass :func:`normalize_address`.
    """
    problem = header_problem(value)
    if problem:
        return [f"{field}: {problem}"]
    _display, address = email.utils.parseaddr(value)
    if not address or "@" not in address or address not in value:
        return [
            f"{field}: {value!r} is not an email address (write addr@example.com or Name <addr@example.com>)"
        ]
    try:
        normalize_address(address)
    except AddressError as exc:
        return [f"{field}: {exc}"]
    return []

"""The one address check every intake uses: recipients, suppressions, from and replyTo.

Strict RFC 5321 limits (64 characters before the ``@``, 254 in all) are enforced
here because SES refuses longer paths at send time, which would turn a bad row
into a failed message instead of a rejected row. Addresses are compared and
de-duplicated case-insensitively (lower-cased whole): mailbox providers treat the
local part that way in practice, and a list with ``Ann@x`` and ``ann@x`` must
not mail the same person twice.

Only addresses SES can send are accepted. SES does not send SMTPUTF8 mail, so a
non-ASCII local part (``zoë@example.com``) is refused here, with that reason, instead
of failing at send time. An internationalized domain is fine: its stored form is the
ASCII (punycode, IDNA 2008) one, ``user@xn--bcher-kva.example`` for
``user@bücher.example``. That is what SES sends to and what its bounce and complaint
notifications report, so a suppression matches whichever way either was written.
"""

from __future__ import annotations

import email.utils
import re
from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from emailplan.contract.headers import checked_by, header_problem

MAX_LOCAL_PART = 64
MAX_ADDRESS = 254

ADDRESS_RULES = (
    "Addresses are compared case-insensitively (the whole address is lower-cased): "
    "Ann@Example.com and ann@example.com are one recipient, mailed once, and a suppressed "
    f"address matches in any case. At most {MAX_LOCAL_PART} characters before the @ and "
    f"{MAX_ADDRESS} in all (RFC 5321). The part before the @ must be ASCII (SES does not send "
    "SMTPUTF8 mail); an internationalized domain is stored and sent in its punycode form "
    "(user@bücher.example is user@xn--bcher-kva.example)."
)
"""The rule in words, for the CRD, the OpenAPI document and the CLI help (one text, one place)."""


# The shape of nearly every address on a real list: a plain ASCII dot-atom before the @,
# letter-digit-hyphen labels after it, an alphabetic top-level domain, no "--" (punycode).
# For these the full validator (about 80 % of a million-row load) can only agree; a test
# checks that it does. Everything else takes the full path.
_PLAIN = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63})"
)


def _plain(text: str) -> bool:
    found = _PLAIN.fullmatch(text)
    return found is not None and "--" not in text and found.group(1).lower() not in SPECIAL_USE_DOMAIN_NAMES


SMTPUTF8_REFUSED = (
    "non-ASCII local part: SES does not send SMTPUTF8 mail, so the part before the @ must be ASCII"
)


class AddressError(ValueError):
    """Why a value is not an address we send to, in words for the list's owner."""


def normalize_address(value: str) -> str:
    """The stored form of an address (ASCII, lower-cased), or :class:`AddressError` naming the problem."""
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
    if _plain(text):
        return text.lower()
    if not local.isascii():
        raise AddressError(SMTPUTF8_REFUSED)
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False, strict=True)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid email address: {exc}") from exc
    if checked.ascii_email is None:  # cannot happen without SMTPUTF8; kept for the type
        raise AddressError(SMTPUTF8_REFUSED)
    return checked.ascii_email.lower()


def mailbox_problem(value: str) -> str | None:
    """Why ``value`` is not one ``Name <addr@example.com>`` or bare address header value, or None.

    The whole value is checked as a header first (no CR, LF or other control
    characters, no raw encoded words), so a display name can never smuggle a
    second header; it must hold exactly one address (``a@x, Shop <b@y>`` would
    make two senders); the address part must appear as written (``parseaddr``
    is lenient) and pass :func:`normalize_address`.
    """
    problem = header_problem(value)
    if problem:
        return problem
    if len(email.utils.getaddresses([value])) != 1:
        return f"{value!r} holds more than one address"
    _display, address = email.utils.parseaddr(value)
    if not address or "@" not in address or address not in value:
        return f"{value!r} is not an email address (write addr@example.com or Name <addr@example.com>)"
    try:
        normalize_address(address)
    except AddressError as exc:
        return str(exc)
    return None


def check_mailbox(value: str, field: str) -> list[str]:
    """Problems with a from/replyTo value, each naming ``field`` (empty: fine)."""
    problem = mailbox_problem(value)
    return [f"{field}: {problem}"] if problem else []


Mailbox = Annotated[str, checked_by(mailbox_problem)]
"""A from/replyTo field of a pydantic model, checked by :func:`mailbox_problem`."""

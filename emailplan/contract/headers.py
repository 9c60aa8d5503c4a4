"""The one check for values that end up in a mail header (from, replyTo, subject, tags, headers).

A CR or LF inside a header value starts a new header: ``Shop\\r\\nBcc: x@y`` in a
display name adds a Bcc. Control characters have no business in a header either,
and a raw RFC 2047 encoded word (``=?utf-8?q?...?=``) written by the user would be
decoded by mail clients into whatever it hides. The sender encodes non-ASCII text
itself, so none of these are needed in a spec. Admission (the CRD pattern), the
operator and the data-plane API all use this module, so a plan sent straight to
the API is refused exactly like one applied with kubectl.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# JSON-schema/RE2 pattern for the CRD: no C0 control characters and no DEL.
HEADER_VALUE_PATTERN = r"^[^\x00-\x1F\x7F]*$"
MAX_HEADER_VALUE = 998  # RFC 5322 line limit

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\x00": "a NUL character"}


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be a header value, or None when it can."""
    # The two tests before each search are cheap, and every row of a list passes them.
    found = None if value.isprintable() else _CONTROL.search(value)  # controls are never printable
    if found:
        char = found.group()
        return f"contains {_NAMES.get(char, f'the control character U+{ord(char):04X}')}"
    if len(value) > MAX_HEADER_VALUE:
        return f"is longer than {MAX_HEADER_VALUE} characters"
    if "=?" in value and _ENCODED_WORD.search(value):
        return "contains an RFC 2047 encoded word (=?...?=); write the text itself"
    return None


def check_header(value: str, field: str) -> list[str]:
    """``[]`` when ``value`` is a safe header value, else one problem naming ``field``."""
    problem = header_problem(value)
    return [f"{field}: {problem}"] if problem else []


def one_line(value: str) -> str:
    """``value`` with every control character and line break turned into single spaces.

    For text that reaches a header after rendering (a subject template's output,
    a recipient's name): it cannot be refused at intake, so it is flattened.
    """
    return " ".join(_CONTROL.sub(" ", value).split())


def checked_by(problem_of: Callable[[str], str | None]) -> AfterValidator:
    """A pydantic validator that refuses a string for which ``problem_of`` names a problem."""

    def check(value: str) -> str:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


HeaderValue = Annotated[str, StringConstraints(pattern=HEADER_VALUE_PATTERN), checked_by(header_problem)]
"""A string field that ends up in a mail header: refused by pydantic like :func:`check_header`."""

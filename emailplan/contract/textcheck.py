"""Strings PostgreSQL cannot store: NUL characters and unpaired surrogates.

JSON allows ``"\\u0000"`` and lone ``"\\ud800"``; PostgreSQL text and jsonb do
not, and UTF-8 cannot carry a lone surrogate at all. From a client such input is
its mistake and gets a 400 naming the field, not a 500 from the database driver
(:func:`find_bad_text`). Text we must keep although its author is not our client
(an SES event quoting a remote mail server) is stored with those characters
replaced (:func:`storable`).
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


REPLACEMENT = "\ufffd"


def unstorable(text: str) -> bool:
    """Whether ``text`` holds a NUL or an unpaired surrogate."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def storable(text: str) -> str:
    """``text`` with every NUL and unpaired surrogate replaced by U+FFFD (a pair becomes its character)."""
    if not unstorable(text):
        return text
    return text.replace("\x00", REPLACEMENT).encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def storable_value(value: Any, depth: int = 0) -> Any:
    """A decoded JSON value with :func:`storable` applied to every string and key."""
    if isinstance(value, str):
        return storable(value)
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {storable(str(k)): storable_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_value(v, depth + 1) for v in value]
    return value


def find_bad_text(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The dotted path of the first key or string PostgreSQL cannot store, else None."""
    if depth > MAX_DEPTH:
        return path or "body"
    if isinstance(value, str):
        return (path or "body") if unstorable(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and unstorable(key):
                return path or "body"
            found = find_bad_text(item, sub, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_bad_text(item, f"{path}[{i}]" if path else f"[{i}]", depth + 1)
            if found is not None:
                return found
    return None


MESSAGE = "text must be valid UTF-8 without NUL characters"

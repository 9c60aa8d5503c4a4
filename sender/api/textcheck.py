"""Strings PostgreSQL cannot store: NUL characters and unpaired surrogates.

JSON allows ``"\\u0000"`` and lone ``"\\ud800"``; PostgreSQL text and jsonb do
not. Such input is the client's mistake and must get a 400 naming the field,
not a 500 from the database driver.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def _bad(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_bad_text(value: Any, path: str = "", depth: int = 0) -> str | None:
    """The dotted path of the first key or string PostgreSQL cannot store, else None."""
    if depth > MAX_DEPTH:
        return path or "body"
    if isinstance(value, str):
        return (path or "body") if _bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _bad(key):
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

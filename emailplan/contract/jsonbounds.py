"""One bounded JSON decoder for every body and row a client sends (API bodies, SNS, NDJSON rows).

``json.loads`` recurses once per nesting level, so ``[[[[...]]]]`` a few thousand
levels deep raises ``RecursionError``, which no caller expected and which became
a 500. Nothing we accept is nested more than a few levels, so anything deeper
than :data:`MAX_DEPTH` is refused with a message that names the problem. The
error is a ``json.JSONDecodeError`` (a ``ValueError``), so callers that already
handle malformed JSON handle these too.

The parse itself stays in C (this sits on the SNS hot path): the depth is
measured on the parsed value, without recursion, and only when the text holds
enough brackets to be that deep.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting accepted (a plan spec is about 4 levels deep, SNS 1, a recipient row 3)."""


class JsonBoundsError(json.JSONDecodeError):
    """Malformed, badly encoded or over-deep JSON; ``msg`` says which."""


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` levels (iterative, stops early)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class _NotJsonError(ValueError):
    """A token Python's parser takes that JSON has not."""


def _refuse_constant(name: str) -> Any:
    raise _NotJsonError(f"{name} is not a JSON number (RFC 8259), and the database cannot store it")


# ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, but ``json.loads`` takes them; a recipient's
# vars holding one reached jsonb and failed the whole batch. One decoder, built once, refuses them
# (``parse_constant`` is called for those tokens only, so other text parses as fast as before).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, but bad UTF-8 and nesting deeper than ``max_depth`` raise :class:`JsonBoundsError`."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonBoundsError(f"not valid UTF-8 at byte {exc.start}", "", exc.start) from exc
    else:
        text = raw
    too_deep = f"nested deeper than {max_depth} levels"
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise JsonBoundsError(too_deep, "", 0) from exc
    except _NotJsonError as exc:
        raise JsonBoundsError(f"not valid JSON: {exc}", "", 0) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise JsonBoundsError(f"not valid JSON: {exc.msg} at {where}", "", exc.pos) from exc
    if text.count("[") + text.count("{") > max_depth and deeper_than(value, max_depth):
        raise JsonBoundsError(too_deep, "", 0)
    return value

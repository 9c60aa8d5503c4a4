"""Recipient lists the operator uploads itself: inline lists and ConfigMap keys.

The data plane parses, validates and deduplicates rows; the operator only turns
the resource's list into the upload body (the first row, for checking templates
against real variables, is read with the same reader the data plane uses:
``emailplan.contract.recipients``). Bodies are sent in chunks so a large
ConfigMap is streamed, not copied into one request buffer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

NDJSON = "application/x-ndjson"
CSV = "text/csv"
CHUNK_BYTES = 64 * 1024


def content_type(fmt: str) -> str:
    return NDJSON if fmt == "jsonl" else CSV


def inline_ndjson(rows: list[dict[str, Any]]) -> Iterator[bytes]:
    """Inline recipients as NDJSON lines, in chunks of about ``CHUNK_BYTES``."""
    buf: list[bytes] = []
    size = 0
    for row in rows:
        line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        buf.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def text_chunks(text: str) -> Iterator[bytes]:
    """A ConfigMap value as UTF-8 chunks."""
    data = text.encode()
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]

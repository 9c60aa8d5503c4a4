"""Recipient lists the operator uploads itself: inline lists and ConfigMap keys.

The data plane parses, validates and deduplicates rows; the operator only turns
the resource's list into the upload body and reads the first row so templates
can be checked against real variables. Bodies are sent in chunks so a large
ConfigMap is streamed, not copied into one request buffer.
"""

from __future__ import annotations

import csv
import io
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


def first_recipient(text: str, fmt: str) -> dict[str, Any] | None:
    """The first data row of a csv (header row first) or jsonl list, or None if there is none."""
    if fmt == "jsonl":
        for line in text.splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    return None
                return row if isinstance(row, dict) else None
        return None
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        cleaned = {str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if any(cleaned.values()):
            return cleaned
    return None

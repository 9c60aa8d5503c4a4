"""Streaming recipient uploads: NDJSON or CSV bodies of any size, parsed row by row.

The body is never held in memory: chunks are split into complete records
(newline-terminated; for CSV, newlines inside quoted fields are kept by
tracking quote parity) and handed in slices to the pure parsers of
``emailplan.sender.recipients``, keeping their row numbering. A byte limit
answers 413; an over-long record is refused with its row number.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.textcheck import MESSAGE as TEXT_MESSAGE
from emailplan.sender.api.textcheck import find_bad_text
from emailplan.sender.recipients import RowError, parse_csv, parse_ndjson

MAX_RECORD_BYTES = 1024 * 1024

Row = tuple[int, Mapping[str, Any] | RowError]


async def _records(chunks: AsyncIterable[bytes], limit: int, csv_quotes: bool) -> AsyncIterator[list[bytes]]:
    """Lists of complete records (each with its newline stripped) as the body streams in."""
    seen = 0
    buf = bytearray()
    in_quotes = False
    scan_from = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, f"upload larger than {limit} bytes")
        buf += chunk
        out: list[bytes] = []
        start = 0
        i = scan_from
        while True:
            nl = buf.find(b"\n", i)
            if nl < 0:
                break
            if csv_quotes:
                in_quotes ^= buf.count(b'"', i, nl) % 2 == 1
                if in_quotes:
                    i = nl + 1
                    continue
            out.append(bytes(buf[start:nl]).rstrip(b"\r"))
            start = i = nl + 1
        if csv_quotes and start < len(buf):
            # Quote parity of the scanned part of the unfinished record carries over.
            in_quotes ^= buf.count(b'"', i, len(buf)) % 2 == 1
        del buf[:start]
        scan_from = len(buf)
        if len(buf) > MAX_RECORD_BYTES:
            raise ApiError(413, f"a record is longer than {MAX_RECORD_BYTES} bytes")
        if out:
            yield out
    if buf.strip():
        yield [bytes(buf).rstrip(b"\r")]


def _checked(row: int, item: Mapping[str, Any] | RowError) -> Mapping[str, Any] | RowError:
    """Refuse rows with text PostgreSQL cannot store (NUL, lone surrogates) by row number."""
    if isinstance(item, RowError):
        return item
    bad = find_bad_text(dict(item))
    if bad is None:
        return item
    return RowError(row, bad.split(".")[0].split("[")[0][:100], TEXT_MESSAGE)


async def checked_rows(rows: AsyncIterable[Row]) -> AsyncIterator[Row]:
    """``rows`` with text PostgreSQL cannot store turned into row errors (for other row sources)."""
    async for row, item in rows:
        yield row, _checked(row, item)


def _decode(record: bytes, row: int) -> str | RowError:
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError:
        return RowError(row, "", "row is not valid UTF-8")


async def ndjson_rows(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[Row]:
    """Rows of an NDJSON body; line N is row N."""
    next_row = 1
    async for records in _records(chunks, limit, csv_quotes=False):
        for row, item in parse_ndjson(records, first_row=next_row):
            yield row, _checked(row, item)
        next_row += len(records)


async def csv_rows(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[Row]:
    """Rows of a CSV body with a header; the first data row is row 1."""
    header: str | None = None
    next_row = 1
    async for records in _records(chunks, limit, csv_quotes=True):
        if header is None:
            first = _decode(records[0], 0)
            if isinstance(first, RowError):
                raise ApiError(400, "CSV header is not valid UTF-8", "email")
            header = first.lstrip("\ufeff")
            if "email" not in [c.strip() for c in header.split(",")]:
                raise ApiError(400, "CSV header has no email column", "email")
            records = records[1:]
        texts: list[str] = []
        bad: dict[int, RowError] = {}
        for offset, record in enumerate(records):
            decoded = _decode(record, next_row + offset)
            if isinstance(decoded, RowError):
                bad[next_row + offset] = decoded
                texts.append("")  # keeps numbering; blank rows are skipped by the parser
            else:
                texts.append(decoded)
        for row, item in parse_csv([header, *texts], first_row=next_row):
            yield row, _checked(row, item)
        for row, err in bad.items():
            yield row, err
        next_row += len(records)

"""Streaming recipient intake: any byte stream (HTTP body, S3 object) through the one reader.

The body is never held in memory: chunks go into
``emailplan.contract.recipients.RecipientReader`` as they arrive and the
numbered rows come out, with text PostgreSQL cannot store turned into row
errors. A byte limit is enforced while streaming (the caller turns it into 413).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from emailplan.contract.recipients import ListFormat, Recipient, RecipientReader, Row, RowError
from emailplan.contract.textcheck import MESSAGE as TEXT_MESSAGE
from emailplan.contract.textcheck import find_bad_text


class TooLarge(Exception):
    """The stream passed its byte limit."""


def _checked(item: Row) -> Row:
    """Refuse rows with text PostgreSQL cannot store (NUL, lone surrogates) by row number."""
    if isinstance(item, RowError):
        return item
    bad = find_bad_text({"name": item.name, "vars": item.vars})
    if bad is None:
        return item
    return RowError(item.row, bad.split(".")[0].split("[")[0][:100], TEXT_MESSAGE)


async def read_rows(
    chunks: AsyncIterable[bytes], fmt: ListFormat | str, limit: int | None = None
) -> AsyncIterator[Row]:
    """Rows of a CSV or NDJSON stream.

    Raises ``ListError`` for a list that cannot be read and ``TooLarge`` past ``limit`` bytes.
    """
    reader = RecipientReader(fmt)
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if limit is not None and seen > limit:
            raise TooLarge(f"upload larger than {limit} bytes")
        for item in reader.feed(chunk):
            yield _checked(item)
    for item in reader.finish():
        yield _checked(item)


__all__ = ["Recipient", "TooLarge", "read_rows"]

"""Read a recipient list from S3 (CSV or NDJSON) as a stream of numbered rows.

Large lists (``recipients.s3`` in the EmailPlan) never pass through the
operator or an HTTP upload: the data plane reads the object itself, line by
line, so memory stays flat however long the list is, and reuses the same
validation and batched insert as uploads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiobotocore.session import get_session

from emailplan.sender.recipients import RowError, parse_csv, parse_ndjson
from emailplan.sender.settings import SenderSettings

CSV_CHUNK_LINES = 5000
FORMATS = ("csv", "jsonl", "ndjson")


async def _lines(body: Any) -> AsyncIterator[str]:
    async for raw in body.iter_lines():
        yield raw.decode("utf-8-sig", "replace") if isinstance(raw, bytes) else str(raw)


async def parse_stream(
    lines: AsyncIterator[str], fmt: str
) -> AsyncIterator[tuple[int, Mapping[str, Any] | RowError]]:
    """Rows of a CSV or NDJSON line stream, numbered like an upload (first data row is 1)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (csv, jsonl)")
    if fmt != "csv":
        row = 0
        async for line in lines:
            row += 1
            for item in parse_ndjson([line], first_row=row):
                yield item
        return
    header: str | None = None
    chunk: list[str] = []
    next_row = 1
    async for line in lines:
        if header is None:
            header = line
            continue
        chunk.append(line)
        if len(chunk) >= CSV_CHUNK_LINES:
            for item in parse_csv([header, *chunk], first_row=next_row):
                yield item
            next_row += len(chunk)
            chunk = []
    if header is not None:
        for item in parse_csv([header, *chunk], first_row=next_row):
            yield item


@contextlib.asynccontextmanager
async def s3_rows(
    settings: SenderSettings, *, bucket: str, key: str, fmt: str
) -> AsyncIterator[AsyncIterator[tuple[int, Mapping[str, Any] | RowError]]]:
    """Rows of ``s3://bucket/key`` (CSV or NDJSON), streamed; feed them to ``ledger.insert_recipients``.

    The loader only reads and parses (it sits beside the ledger, not above it):
    the caller stores the rows and completes the list, e.g.::

        async with s3_rows(settings, bucket=b, key=k, fmt="csv") as rows:
            result = await ledger.insert_recipients(engine, plan_id, rows)
        await ledger.complete_recipients(engine, plan_id, queue)
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (csv, jsonl)")
    session = get_session()
    async with session.create_client(
        "s3", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    ) as s3:
        answer = await s3.get_object(Bucket=bucket, Key=key)
        body = answer["Body"]
        try:
            yield parse_stream(_lines(body), fmt)
        finally:
            await _close(body)


async def _close(body: Any) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        outcome = close()
        if hasattr(outcome, "__await__"):
            await outcome

"""Loading a recipient list from S3 in the background (``POST .../recipients/s3``).

The object is streamed (never held whole), parsed with the same streaming
parsers as an upload, stored through the ledger and then completed, so the
plan starts sending without the operator moving a byte of the list.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from emailplan.sender import ledger
from emailplan.sender.api.state import ApiState
from emailplan.sender.api.uploads import csv_rows, ndjson_rows

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = await body.read(CHUNK)
        if not chunk:
            return
        yield chunk


async def load(state: ApiState, plan_id: uuid.UUID, bucket: str, key: str, fmt: str) -> None:
    """Stream ``s3://bucket/key`` into the plan and complete its list; errors are logged."""
    assert state.s3 is not None and state.queue is not None
    extra = {"plan": str(plan_id), "bucket": bucket, "key": key}
    log.info("loading recipients from S3", extra=extra)
    try:
        obj = await state.s3.get_object(Bucket=bucket, Key=key)
        async with obj["Body"] as body:
            chunks = _chunks(body)
            limit = state.settings.max_upload_bytes * 16
            rows = csv_rows(chunks, limit) if fmt == "csv" else ndjson_rows(chunks, limit)
            result = await ledger.insert_recipients(state.engine, plan_id, rows)
        enqueued = await ledger.complete_recipients(state.engine, plan_id, state.queue)
    except Exception:
        log.exception("loading recipients from S3 failed", extra=extra)
        return
    log.info(
        "recipients loaded from S3",
        extra={
            **extra,
            "accepted": result.accepted,
            "rejected": result.rejected,
            "duplicates": result.duplicates,
            "suppressed": result.suppressed,
            "enqueued": enqueued,
        },
    )

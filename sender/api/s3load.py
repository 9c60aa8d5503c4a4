"""Loading a recipient list from S3 in the background (``POST .../recipients/s3``).

The object is streamed by ``emailplan.sender.loader`` (never held whole),
stored through the ledger like an upload (same validation, batching, dedup,
suppression) and then completed, so the plan starts sending without the
operator moving a byte of the list.
"""

from __future__ import annotations

import logging
import uuid

from emailplan.sender import ledger, loader
from emailplan.sender.api.state import ApiState
from emailplan.sender.api.uploads import checked_rows

log = logging.getLogger(__name__)


async def load(state: ApiState, plan_id: uuid.UUID, bucket: str, key: str, fmt: str) -> None:
    """Stream ``s3://bucket/key`` into the plan and complete its list; failures are logged."""
    assert state.queue is not None
    extra = {"plan": str(plan_id), "bucket": bucket, "key": key}
    log.info("loading recipients from S3", extra=extra)
    try:
        async with loader.s3_rows(state.settings, bucket=bucket, key=key, fmt=fmt) as rows:
            result = await ledger.insert_recipients(state.engine, plan_id, checked_rows(rows))
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

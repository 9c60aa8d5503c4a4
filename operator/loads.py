"""Loading a plan's recipients, as pure rules: which load to start now, and the words that report it.

Split from ``decide`` (same purity contract: no I/O, no clock); ``decide`` asks
:func:`load_action` once a pass and shows the summaries in conditions and Events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from emailplan.contract.plans import LoadJob, LoadSourceKind, LoadState, PlanView, S3Source
from emailplan.contract.spec import RecipientSource
from emailplan.operator.planspec import PlanSpec

LOAD_STALE_AFTER = timedelta(seconds=45)  # a load with no heartbeat this long is started again
MAX_LOAD_BACKOFF_SECONDS = 300.0
EVENT_ROWS_CHARS = 900  # Event messages are cut at 1 KiB by the API server
FINAL_LOAD_WORDS = "not retried: fix the list, then change the plan's spec to load it again"


class LoadAction(StrEnum):
    UPLOAD = "upload"  # inline list or ConfigMap: the operator posts it whole
    S3 = "s3"  # the data plane reads the object itself
    FROM_PLAN = "fromPlan"  # the data plane takes a follow-up's audience from the source plan


def action_for(source: RecipientSource | None) -> LoadAction:
    if source is RecipientSource.S3:
        return LoadAction.S3
    if source is RecipientSource.FROM_PLAN:
        return LoadAction.FROM_PLAN
    return LoadAction.UPLOAD


def s3_source(spec: PlanSpec) -> S3Source:
    s3 = spec.recipients.s3
    assert s3 is not None
    return S3Source(bucket=s3.bucket, key=s3.key, format=s3.format.value)


def _shown_failure(status: Mapping[str, Any]) -> tuple[bool, int]:
    """Whether ``LoadFailed`` shows True, and the generation it was shown for."""
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "LoadFailed":
            try:
                generation = int(c.get("observedGeneration") or 0)
            except (TypeError, ValueError):
                generation = 0
            return c.get("status") == "True", generation
    return False, 0


def load_action(
    view: PlanView | None, spec: PlanSpec, status: Mapping[str, Any], now: datetime, generation: int
) -> LoadAction | None:
    """Start a load when none ran, retry a failed one with backoff, restart a silent one."""
    if view is not None and view.recipients_loaded:
        return None
    action = action_for(spec.recipients_source)
    job = view.load if view is not None else None
    if job is None:
        return action
    since = (now - job.updated_at) if job.updated_at else LOAD_STALE_AFTER * 2
    if job.state is LoadState.FAILED and job.failure is not None and job.failure.permanent:
        # Never again by itself: once the failure was shown, only a spec change tries again.
        shown, shown_for = _shown_failure(status)
        return action if shown and shown_for < generation else None
    if job.state is LoadState.FAILED:
        wait = min(MAX_LOAD_BACKOFF_SECONDS, 2.0 ** min(job.attempts, 9))
        return action if since.total_seconds() >= wait else None
    if job.state is LoadState.LOADED:
        return action  # loaded but not completed: completing again is idempotent
    if job.source in (LoadSourceKind.UPLOAD, LoadSourceKind.FROM_PLAN):
        return action  # runs inside one pass: one still open was cut short
    return action if since > LOAD_STALE_AFTER else None


def load_summary(job: LoadJob | None, total: int) -> str:
    if job is None:
        return f"recipients loaded: {total} total"
    return (
        f"recipients loaded: {job.accepted} accepted, {job.rejected} rejected, "
        f"{job.duplicates} duplicates, {job.suppressed} suppressed, {total} total"
    )


def rejected_rows_message(job: LoadJob) -> str:
    """The first rejected rows by number and reason, as many as fit an Event."""
    head = f"{job.rejected} rows rejected"
    parts: list[str] = []
    size = len(head)
    for p in job.rejected_rows:
        text = f"row {p.row}: {p.message}"
        if size + len(text) + 2 > EVENT_ROWS_CHARS:
            parts.append(f"... ({job.rejected - len(parts)} more)")
            break
        parts.append(text)
        size += len(text) + 2
    return head + (": " + "; ".join(parts) if parts else "")

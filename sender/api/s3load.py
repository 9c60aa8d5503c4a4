"""The recipient load job of an S3 list (``POST .../recipients/s3``), run in the background.

The job lives in the database (``loading.save_load``), not in this process: its
state (pending, loading, loaded, failed), counts, first problem rows and the
reason of a failure are what the operator shows on the EmailPlan. A loading job
beats a heartbeat; one whose heartbeat stopped (the API restarted mid-load) is
started again from the beginning, after the unfinished rows were forgotten, so
nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta

from emailplan.contract.plans import LoadJob, LoadResult, LoadSourceKind, LoadState, S3Source
from emailplan.contract.recipients import EmptyListError
from emailplan.sender import loader
from emailplan.sender.api.state import ApiState
from emailplan.sender.api.uploads import read_rows
from emailplan.sender.store import loading

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_AFTER = timedelta(seconds=30)


def task_name(plan_id: uuid.UUID) -> str:
    return f"s3-load-{plan_id}"


def needs_start(
    job: LoadJob | None, source: S3Source, *, complete: bool, running_here: bool, now: datetime
) -> bool:
    """Start (or restart) unless this source's list is loaded and complete, or its job is alive."""
    if running_here:
        return False
    if job is None or job.source is not LoadSourceKind.S3 or job.s3 != source:
        return True
    if job.state is LoadState.LOADED:
        return not complete
    if job.state in (LoadState.PENDING, LoadState.LOADING):
        return job.updated_at is None or now - job.updated_at > STALE_AFTER
    return True  # failed: the caller asked again, so try again


async def start(state: ApiState, plan_id: uuid.UUID, source: S3Source, previous: LoadJob | None) -> LoadJob:
    """Record the job as pending and run it in the background."""
    if previous is not None and previous.s3 == source:  # same list again: keep its attempts (and counts)
        job = previous.model_copy(update={"state": LoadState.PENDING, "failure": None})
    else:
        job = LoadJob(source=LoadSourceKind.S3, s3=source)
    job = await loading.save_load(state.engine, plan_id, job)
    state.spawn(run(state, plan_id, job), task_name(plan_id))
    return job


async def run(state: ApiState, plan_id: uuid.UUID, job: LoadJob) -> None:
    """Load the list from the start, complete it, and record the outcome (never raises)."""
    assert state.queue is not None and job.s3 is not None
    s3 = job.s3
    extra = {"plan": str(plan_id), "bucket": s3.bucket, "key": s3.key}
    job = job.model_copy(update={"state": LoadState.LOADING, "attempts": job.attempts + 1, "failure": None})
    beat = asyncio.create_task(_heartbeat(state, plan_id, job))
    try:
        await loading.save_load(state.engine, plan_id, job)
        if await loading.reset_recipients(state.engine, plan_id):
            log.info("loading recipients from S3", extra=extra)
            account = await loader.account_suppressions(state.settings) if state.account else None
            async with loader.s3_chunks(state.settings, bucket=s3.bucket, key=s3.key) as chunks:
                result = await loading.insert_recipients(
                    state.engine, plan_id, read_rows(chunks, s3.format), account_suppressed=account
                )
            if result.accepted + result.rejected + result.duplicates + result.suppressed == 0:
                raise EmptyListError("no rows")
        else:  # stored and completed by an earlier attempt that failed while enqueueing: finish that
            result = LoadResult.model_validate(job.model_dump())
        await _stop(beat)
        # The outcome is recorded before the list is completed, so whoever sees the list complete
        # also sees its counts and rows; a crash in between leaves a loaded job on an incomplete
        # list, which the next request loads again.
        await loading.save_load(
            state.engine, plan_id, job.model_copy(update={**dict(result), "state": LoadState.LOADED})
        )
        enqueued = await loading.complete_recipients(state.engine, plan_id, state.queue)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the job's reason, for the operator
        failure = loader.failure(exc, s3.bucket, s3.key)
        log.warning("loading recipients from S3 failed", extra={**extra, "reason": failure.reason.value})
        await _stop(beat)
        await _save_quietly(
            state, plan_id, job.model_copy(update={"state": LoadState.FAILED, "failure": failure})
        )
        return
    finally:
        await _stop(beat)
    log.info(
        "recipients loaded from S3",
        extra={
            **extra,
            **result.model_dump(exclude={"rejected_rows", "duplicate_rows"}),
            "enqueued": enqueued,
        },
    )


async def _stop(beat: asyncio.Task[None]) -> None:
    """Stop the heartbeat and wait for it, so a late beat never overwrites the outcome."""
    beat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beat


async def _heartbeat(state: ApiState, plan_id: uuid.UUID, job: LoadJob) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        with contextlib.suppress(Exception):
            await loading.save_load(state.engine, plan_id, job)


async def _save_quietly(state: ApiState, plan_id: uuid.UUID, job: LoadJob) -> None:
    try:
        await loading.save_load(state.engine, plan_id, job)
    except Exception:
        log.exception("could not record the load job", extra={"plan": str(plan_id)})

"""Faults at scale (CI-sized): real worker processes killed, plans deleted and paused mid-send.

Real PostgreSQL, SQS and SES in moto; what counts is what SES received. Every test
ends with the ledger's sum: total = sent + failed + stopped + suppressed, nothing
left ``processing``. No timed assertions: the fault benchmark (bench/fault_bench.py)
measures how fast each recovery is.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.worker import (
    SPEC,
    Workers,
    addressee,
    emails,
    make_plan,
    raw_sent,
    received,
    wait_counts,
    wait_exit,
    worker_env,
)

from devenv.moto import MotoServer
from devenv.suspend import set_suspended
from emailplan.sender.store import loading, plans

CONCURRENCY = 8  # send slots per worker: the most sends one worker can have in flight


def assert_sums(counts: dict[str, int]) -> None:
    assert counts["processing"] == 0 and counts["created"] == 0, counts
    final = counts["sent"] + counts["failed"] + counts["stopped"] + counts["suppressed"]
    assert counts["total"] == final, counts


def fault_env(url: str, plan_id: uuid.UUID, **extra: str) -> dict[str, str]:
    """Production defaults for leases and result writes (no test-only shortcuts), 8 send slots."""
    return worker_env(url, plan_id, EMAILPLAN_WORKER_CONCURRENCY=str(CONCURRENCY), **extra)


async def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)


async def test_sigkill_five_times_loses_nothing_and_repeats_only_what_was_in_flight(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n, kills = 2000, 5
    plan_id = await make_plan(engine, emails(n), rate=200)
    env = fault_env(migrated, plan_id)
    pods = [workers.start(env), workers.start(env)]
    for k in range(kills):
        await wait_counts(
            engine, plan_id, lambda c, k=k: c["sent"] >= (k + 1) * n // (kills + 2), 300, workers
        )
        victim = k % 2
        await kill(pods[victim])
        pods[victim] = workers.start(env)  # restartPolicy: Always
    await wait_exit(pods, workers, 600)

    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)), f"{len(set(emails(n)) - set(to))} recipients lost"
    repeated = sum(v - 1 for v in to.values())
    # each kill may repeat at most the sends in flight in the killed pod at that instant
    assert repeated <= kills * CONCURRENCY, f"{repeated} repeats after {kills} kills"
    counts = await plans.get_counts(engine, plan_id) or {}
    assert counts["sent"] == n
    assert_sums(counts)


async def test_a_pod_frozen_for_seconds_mid_send_sends_nobody_twice(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    """A live pod that stops running for a while (CPU starved, a VM or cgroup freeze) while its
    sends are in flight keeps its leases: the other pod must not take over and send again."""
    n = 3000
    plan_id = await make_plan(engine, emails(n), rate=300)
    env = fault_env(migrated, plan_id)
    frozen, other = workers.start(env), workers.start(env)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= n // 4, 300, workers)
    os.killpg(frozen.pid, signal.SIGSTOP)  # the whole pod: supervisor, forkserver, workers
    try:
        await asyncio.sleep(10)
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    await wait_exit([frozen, other], workers, 600)

    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)), f"{len(set(emails(n)) - set(to))} recipients lost"
    twice = sorted(a for a, v in to.items() if v > 1)
    assert not twice, f"{len(twice)} recipients got two emails, e.g. {twice[:3]}"
    async with engine.connect() as conn:
        # What kept it so: the live pod took none of the frozen pod's messages over (a message
        # taken over while its send was in flight is sent twice).
        retaken = await conn.scalar(
            text("SELECT count(*) FROM messages WHERE plan_id = :p AND attempts > 1"), {"p": plan_id}
        )
    assert retaken == 0, f"{retaken} messages were taken over from the frozen pod"
    counts = await plans.get_counts(engine, plan_id) or {}
    assert counts["sent"] == n
    assert_sums(counts)


async def test_sigkill_then_delete_leaves_no_row_processing_and_the_sums_hold(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 2000
    plan_id = await make_plan(engine, emails(n), rate=200)
    env = fault_env(migrated, plan_id)
    pods = [workers.start(env), workers.start(env)]
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= n // 4, 300, workers)
    await kill(pods[0])
    await asyncio.sleep(0.5)
    view = await plans.stop_plan(engine, plan_id, None)  # what deleting the EmailPlan does
    assert view.state == "stopped"
    await wait_exit(pods[1:], workers, 120)  # the live pod finishes its sends in flight and exits

    counts = await plans.get_counts(engine, plan_id) or {}
    assert_sums(counts)
    assert 0 < counts["stopped"] < n, "the stop came too late (or too early) to prove anything"
    accepted = collections.Counter(addressee(m) for m in received(aws))
    assert max(accepted.values()) == 1
    # SES accepted what the ledger counts, apart from the dead pod's sends in flight at the kill
    assert counts["sent"] <= len(accepted) <= counts["sent"] + CONCURRENCY


async def test_suspend_and_resume_three_times_sends_everyone_once(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n, cycles = 1000, 3
    plan_id = await make_plan(engine, emails(n), rate=200)
    env = fault_env(migrated, plan_id)
    pods = [workers.start(env), workers.start(env)]
    for k in range(cycles):
        await wait_counts(
            engine, plan_id, lambda c, k=k: c["sent"] >= (k + 1) * n // (cycles + 2), 300, workers
        )
        await set_suspended(engine, plan_id, True)
        paused = await wait_counts(engine, plan_id, lambda c: c["processing"] == 0, 60, workers)
        await asyncio.sleep(1.0)
        assert len(raw_sent(aws)) == paused["sent"], "sent while suspended"
        await set_suspended(engine, plan_id, False)
    for _ in range(3):  # pauses shorter than the pods' one-second look at the plan
        await set_suspended(engine, plan_id, True)
        await asyncio.sleep(0.3)
        await set_suspended(engine, plan_id, False)
        await asyncio.sleep(0.5)
    await wait_exit(pods, workers, 600)

    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)) and max(to.values()) == 1
    counts = await plans.get_counts(engine, plan_id) or {}
    assert counts["sent"] == n
    assert_sums(counts)


async def test_work_that_cannot_be_claimed_is_visible_again_at_once(
    engine: AsyncEngine, aws: MotoServer
) -> None:
    from devenv.ports import free_port
    from emailplan.sender.db import make_engine
    from emailplan.sender.intake import Intake
    from emailplan.sender.settings import SenderSettings
    from emailplan.sender.workqueue import WorkQueue

    plan_id = await make_plan(engine, emails(5), rate=10)
    # the database is away for this pod (nothing listens there)
    away = make_engine(url=f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/gone", pool_size=1)
    try:
        async with WorkQueue.open(SenderSettings()) as queue:
            intake = Intake(away, queue, plan_id, "pod-a", lease_seconds=300, poll_wait_seconds=1)
            taken = await intake.receive(room=100)
            assert taken is not None and taken.outage and taken.claimed == []
            # another pod gets the work now, not after the 300 s the receive made it invisible for
            again = await queue.receive(plan_id, wait_seconds=1)
            assert sum(len(job.ids) for job in again) == 5
    finally:
        await away.dispose()


async def test_a_list_completed_but_never_queued_is_still_sent_once(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    """The API died between marking the list complete and queueing it (1M rows take a while).

    Nothing will queue those rows again: the operator sees the list loaded and does
    not upload it twice. The ledger is the truth, so the pods' orphan sweep takes
    released rows that were never queued.
    """
    n = 300
    plan_id = uuid.uuid4()
    await plans.upsert_plan(engine, plan_id, name="t", namespace="ns", spec=SPEC, rate_per_second=200)
    rows = ((i, {"email": e}) for i, e in enumerate(emails(n), 1))
    await loading.insert_recipients(engine, plan_id, rows)
    async with engine.begin() as conn:  # the state the crash left: complete, nothing queued
        await conn.execute(
            text("UPDATE plans SET recipients_complete = true, state = 'ready' WHERE id = :p"), {"p": plan_id}
        )
    pods = [workers.start(fault_env(migrated, plan_id))]
    await wait_exit(pods, workers, 300)

    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)) and max(to.values()) == 1
    counts = await plans.get_counts(engine, plan_id) or {}
    assert counts["sent"] == n
    assert_sums(counts)

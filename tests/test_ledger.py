"""Ledger against a real PostgreSQL (fresh database per test) and SQS in moto."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devenv.moto import MotoServer
from devenv.suspend import set_suspended
from emailplan.contract.cohorts import cutoff
from emailplan.contract.plans import SUPPRESSED_PREFIX
from emailplan.sender.db import make_engine
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import claims, loading, pacing, plans, sendresults
from emailplan.sender.store.sendresults import SendResult
from emailplan.sender.workqueue import WorkQueue

SPEC = {"from": "News <news@example.com>", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}


async def new_plan(engine: AsyncEngine, rate: float = 14.0) -> uuid.UUID:
    plan_id = uuid.uuid4()
    await plans.upsert_plan(engine, plan_id, name="p", namespace="ns", spec=SPEC, rate_per_second=rate)
    return plan_id


def test_db_upgrade_command_creates_every_table(database_url: str) -> None:
    env = {**os.environ, "EMAILPLAN_DATABASE_URL": database_url}
    exe = Path(sys.executable).with_name("emailplan")
    subprocess.run([str(exe), "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)

    async def tables() -> set[str]:
        eng = make_engine(url=database_url, pool_size=1)
        async with eng.connect() as conn:
            rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            names = set(rows.scalars())
        await eng.dispose()
        return names

    assert {
        "plans",
        "messages",
        "plan_counters",
        "events",
        "suppressions",
        "rate_buckets",
        "alembic_version",
    } <= asyncio.run(tables())


async def test_upsert_is_idempotent_and_suspend_toggles_state(engine: AsyncEngine) -> None:
    plan_id = uuid.uuid4()
    view, created = await plans.upsert_plan(engine, plan_id, name="a", namespace="ns", spec=SPEC)
    assert created and view.state == "loading" and view.counts["total"] == 0
    view, created = await plans.upsert_plan(
        engine, plan_id, name="a", namespace="ns", spec=SPEC, rate_per_second=50, suspended=True
    )
    assert not created and view.state == "suspended" and view.rate_per_second == 50
    view, _ = await plans.upsert_plan(engine, plan_id, name="a", namespace="ns", spec=SPEC)
    assert view.state == "loading"


async def test_variants_added_during_a_load_count_every_row_of_the_cohort(engine: AsyncEngine) -> None:
    """A plan that starts to split its list while a load runs: the rows stored before the
    change and those stored after it, in the same load, are all counted by bucket. (Only a
    split plan's rows are in the bucket index: the change marks the rows stored so far and
    waits for a batch in flight, and the loader reads the plan's flag for every batch.)"""
    plan_id = await new_plan(engine)
    paused, resume = asyncio.Event(), asyncio.Event()

    async def rows() -> AsyncIterator[tuple[int, dict[str, str]]]:
        for i in range(1, 401):
            if i == 201:  # two batches of 100 handed over, the second may still be in flight
                paused.set()
                await resume.wait()
            yield i, {"email": f"r{i}@example.com"}

    load = asyncio.create_task(loading.insert_recipients(engine, plan_id, rows(), batch_size=100))
    await paused.wait()
    split = {**SPEC, "variants": [{"name": "a"}, {"name": "b"}], "testPercent": 50}
    await plans.upsert_plan(engine, plan_id, name="p", namespace="ns", spec=split)
    resume.set()
    assert (await load).accepted == 400

    async with engine.connect() as conn:
        stored = await conn.execute(text("SELECT bucket FROM messages WHERE plan_id = :p"), {"p": plan_id})
        buckets = [int(b) for b in stored.scalars()]
    want = Counter("ab"[b % 2] for b in buckets if b < cutoff(50))
    assert len(buckets) == 400 and 150 < sum(want.values()) < 250
    counted = {v.name: v.recipients for v in await plans.variant_counts(engine, plan_id)}
    assert counted == dict(want)


async def test_upload_reports_bad_rows_duplicates_and_suppressed(engine: AsyncEngine) -> None:
    plan_id = await new_plan(engine)
    await loading.add_suppressions(engine, ["Blocked@Example.com"], "complaint")
    rows = [
        (1, {"email": "a@example.com", "name": "A"}),
        (2, {"email": "not-an-address"}),
        (3, {"email": "A@EXAMPLE.com"}),  # duplicate of row 1 (same batch)
        (4, {"email": "blocked@example.com"}),
        (5, {"name": "no email"}),
        (6, {"email": "b@example.com", "vars": {"code": "X1"}}),
        (7, {"email": "c@example.com", "vars": ["not", "an", "object"]}),
        (8, {"email": "b@example.com"}),  # duplicate across batches (batch_size=2)
    ]
    result = await loading.insert_recipients(engine, plan_id, rows, batch_size=2)
    assert (result.accepted, result.rejected, result.duplicates, result.suppressed) == (2, 3, 2, 1)
    assert {e.row: e.field for e in result.rejected_rows} == {2: "email", 5: "email", 7: "vars"}
    assert [e.row for e in result.duplicate_rows] == [3, 8]  # kept apart from the errors

    again = await loading.insert_recipients(engine, plan_id, rows)
    assert (again.accepted, again.suppressed, again.duplicates) == (0, 0, 5)
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert (counts["total"], counts["created"], counts["suppressed"]) == (3, 2, 1)


async def test_an_address_seen_batches_earlier_is_a_duplicate_and_every_later_row_is_still_stored(
    engine: AsyncEngine,
) -> None:
    """Batches are stored with COPY until one meets an address the plan has; the load goes on.

    The earlier row of a duplicate pair is the one kept, whichever path stored it, and the
    rows after the conflict are stored, counted and suppressed as before it.
    """
    plan_id = await new_plan(engine)
    await loading.add_suppressions(engine, ["late@example.com"], "bounce")
    rows = [(i, {"email": f"u{i}@example.com", "name": f"first {i}"}) for i in range(1, 11)]
    rows += [(11, {"email": "U2@example.com", "name": "second"})]  # row 2's address, three batches on
    rows += [(i, {"email": f"u{i}@example.com"}) for i in range(12, 16)]
    rows += [(16, {"email": "late@example.com"}), (17, {"email": "u12@example.com"})]
    result = await loading.insert_recipients(engine, plan_id, rows, batch_size=3)
    assert (result.accepted, result.suppressed, result.duplicates) == (14, 1, 2)
    assert [(p.row, p.field) for p in result.duplicate_rows] == [(11, "email"), (17, "email")]
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT row_no, name FROM messages WHERE plan_id = :p"), {"p": plan_id}
        )
        stored = {row_no: name for row_no, name in found}
        reason = (
            await conn.execute(text("SELECT reason FROM messages WHERE email = 'late@example.com'"))
        ).scalar_one()
    assert sorted(stored) == [*range(1, 11), *range(12, 17)] and stored[2] == "first 2"
    assert reason == SUPPRESSED_PREFIX + "bounce"
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert (counts["total"], counts["created"], counts["suppressed"]) == (15, 14, 1)


async def test_deleting_a_plan_row_deletes_its_messages_and_a_load_for_it_stores_nothing(
    engine: AsyncEngine,
) -> None:
    """What an administrator's ``DELETE FROM plans`` leaves: no message of that plan, none orphaned."""
    kept, gone = await new_plan(engine), await new_plan(engine)
    for plan_id in (kept, gone):
        await loading.insert_recipients(
            engine, plan_id, [(1, {"email": "a@example.com"}), (2, {"email": "b@x.org"})]
        )
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM plans WHERE id = :p"), {"p": gone})
    async with engine.connect() as conn:
        left = [
            tuple(r) for r in await conn.execute(text("SELECT plan_id, count(*) FROM messages GROUP BY 1"))
        ]
    assert left == [(kept, 2)]
    with pytest.raises(plans.PlanNotFoundError):
        await loading.insert_recipients(engine, gone, [(1, {"email": "c@example.com"})])


async def test_an_ses_event_finds_its_message_by_the_ses_id_index(engine: AsyncEngine) -> None:
    """Only sent rows have an SES id, and the event store's lookup by it reads that index, never the plan."""
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, ((i, {"email": f"u{i}@example.com"}) for i in range(1, 5001))
    )
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE messages SET ses_message_id = 'ses-' || id WHERE id % 10 = 0"))
        await conn.execute(text("ANALYZE messages"))
        plan = "\n".join(
            (
                await conn.execute(
                    text(
                        "EXPLAIN SELECT a.id FROM unnest(CAST(:ids AS text[])) AS i(ses_id) "
                        "LEFT JOIN messages a ON a.ses_message_id = i.ses_id"
                    ),
                    {"ids": ["ses-10", "ses-20"]},
                )
            ).scalars()
        )
        with pytest.raises(Exception, match="uq_messages_ses_message_id"):
            await conn.execute(text("UPDATE messages SET ses_message_id = 'ses-10' WHERE id = 11"))
    assert "uq_messages_ses_message_id" in plan and "Seq Scan on messages" not in plan, plan


async def test_complete_enqueue_claim_lease_and_results(engine: AsyncEngine, aws: MotoServer) -> None:
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, ((i, {"email": f"u{i}@example.com"}) for i in range(1, 251))
    )
    async with WorkQueue.open(SenderSettings()) as queue:
        assert await loading.complete_recipients(engine, plan_id, queue) == 250
        assert await loading.complete_recipients(engine, plan_id, queue) == 0  # idempotent
        jobs = []
        for _ in range(5):
            jobs += await queue.receive(plan_id, wait_seconds=1)
        ids = sorted(i for job in jobs for i in job.ids)
        assert len(ids) == 250 and len(set(ids)) == 250
        assert max(len(job.ids) for job in jobs) == min(
            250, loading.IDS_PER_QUEUE_MESSAGE
        )  # ids ride together

    first = await claims.claim(engine, plan_id, ids[:100], "w1", lease_seconds=60)
    assert len(first) == 100
    # another worker with the same ids (SQS redelivery) gets nothing while the lease runs
    assert await claims.claim(engine, plan_id, ids[:100], "w2", lease_seconds=60) == []
    # an expired lease is reclaimed
    short = await claims.claim(engine, plan_id, ids[100:110], "w1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    again = await claims.claim(engine, plan_id, ids[100:110], "w2", lease_seconds=60)
    assert [c.id for c in again] == [c.id for c in short]
    assert again[0].attempts == 2

    results = [SendResult(c.id, "sent", ses_message_id=f"ses-{c.id}") for c in first[:99]]
    results.append(SendResult(first[99].id, "failed", error="MessageRejected: bad"))
    assert await sendresults.record_results(engine, plan_id, results) == 100
    assert await sendresults.record_results(engine, plan_id, results) == 0  # written once
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert (counts["sent"], counts["failed"], counts["processing"], counts["created"]) == (99, 1, 10, 140)
    assert await plans.sent_in_last_hours(engine, 1) == 99

    # shutdown releases what was not sent
    assert await claims.release(engine, plan_id, [c.id for c in again], "w2") == 10
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["processing"], counts["created"]) == (0, 150)


async def test_suppression_rechecked_at_claim(engine: AsyncEngine) -> None:
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, [(1, {"email": "x@example.com"}), (2, {"email": "y@example.com"})]
    )
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE plans SET state = 'ready', recipients_complete = true"))
        ids = list((await conn.execute(text("SELECT id FROM messages ORDER BY id"))).scalars())
    await loading.add_suppressions(engine, ["X@example.com"], "unsubscribe")
    claimed = await claims.claim(engine, plan_id, ids, "w", 60)
    assert [c.email for c in claimed] == ["y@example.com"]
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["suppressed"], counts["processing"], counts["created"]) == (1, 1, 0)


async def test_nothing_claimed_while_suspended_or_before_start(engine: AsyncEngine) -> None:
    plan_id = await new_plan(engine)
    await loading.insert_recipients(engine, plan_id, [(1, {"email": "x@example.com"})])
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE plans SET state = 'ready', recipients_complete = true"))
        ids = list((await conn.execute(text("SELECT id FROM messages"))).scalars())
    await set_suspended(engine, plan_id, True)
    assert await claims.claim(engine, plan_id, ids, "w", 60) == []
    view = await set_suspended(engine, plan_id, False)
    assert view.state == "ready"
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE plans SET start_at = now() + interval '1 hour'"))
    assert await claims.claim(engine, plan_id, ids, "w", 60) == []


async def test_stop_turns_remaining_into_stopped_and_purges(engine: AsyncEngine, aws: MotoServer) -> None:
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, ((i, {"email": f"s{i}@example.com"}) for i in range(1, 31))
    )
    async with WorkQueue.open(SenderSettings()) as queue:
        await loading.complete_recipients(engine, plan_id, queue)
        view = await plans.stop_plan(engine, plan_id, queue)
        assert view.state == "stopped"
        assert view.counts["stopped"] == 30 and view.counts["created"] == 0
        assert await queue.receive(plan_id, wait_seconds=1) == []
        with pytest.raises(plans.PlanClosedError):
            await loading.insert_recipients(engine, plan_id, [(1, {"email": "late@example.com"})])


async def test_shared_bucket_grants_at_most_the_plan_rate(engine: AsyncEngine) -> None:
    plan_id = await new_plan(engine, rate=20)
    granted = 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 1.0:
        got, rate = await pacing.take_tokens(engine, plan_id, 5, account_rate=None)
        granted += got
        assert rate == 20
        await asyncio.sleep(0.02)
    # one second at 20/s plus at most the burst (10): never more
    assert granted <= 20 * (loop.time() - start) + 10 + 1
    assert granted >= 5
    # the account bucket caps every plan together
    other = await new_plan(engine, rate=1000)
    total = 0.0
    start = loop.time()
    while loop.time() - start < 0.5:
        got, _ = await pacing.take_tokens(engine, other, 100, account_rate=10)
        total += got
        await asyncio.sleep(0.02)
    assert total <= 10 * (loop.time() - start) + 5 + 1


async def test_unused_tokens_go_back_to_the_shared_bucket(engine: AsyncEngine) -> None:
    plan_id = await new_plan(engine, rate=0.1)  # one token per 10 s, burst 1: no refill during the test
    assert await pacing.take_tokens(engine, plan_id, 0, account_rate=None) == (0, 0.1)  # creates the bucket
    assert (await pacing.take_tokens(engine, plan_id, 0, account_rate=None, give_back=1))[0] == 0
    assert (await pacing.take_tokens(engine, plan_id, 1, account_rate=None))[0] == 1
    # another pod finds the bucket empty until the first returns its unused token
    assert (await pacing.take_tokens(engine, plan_id, 1, account_rate=None))[0] == 0
    await pacing.take_tokens(engine, plan_id, 0, account_rate=None, give_back=1)
    assert (await pacing.take_tokens(engine, plan_id, 1, account_rate=None))[0] == 1
    # returning more than the burst does not let anyone burst above it
    await pacing.take_tokens(engine, plan_id, 0, account_rate=None, give_back=50)
    assert (await pacing.take_tokens(engine, plan_id, 50, account_rate=None))[0] == 1
    with pytest.raises(plans.PlanNotFoundError):
        await pacing.take_tokens(engine, uuid.uuid4(), 1, account_rate=10)


async def test_s3_list_is_streamed_validated_and_enqueued(engine: AsyncEngine, aws: MotoServer) -> None:
    import boto3

    from emailplan.sender.api.uploads import read_rows
    from emailplan.sender.loader import s3_chunks

    lines = ["email,name,code"] + [f"u{i}@example.com,U{i},C{i}" for i in range(1, 12001)]
    lines[5] = "broken-address,X,Y"  # data row 5
    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url)
    s3.create_bucket(Bucket="lists")
    s3.put_object(Bucket="lists", Key="spring.csv", Body="\n".join(lines).encode())
    plan_id = await new_plan(engine)
    settings = SenderSettings()
    async with s3_chunks(settings, bucket="lists", key="spring.csv") as chunks:
        result = await loading.insert_recipients(engine, plan_id, read_rows(chunks, "csv"))
    async with WorkQueue.open(settings) as queue:
        await loading.complete_recipients(engine, plan_id, queue)
    assert (result.accepted, result.rejected) == (11999, 1)
    assert [(e.row, e.field) for e in result.rejected_rows] == [(5, "email")]
    view = await plans.get_plan(engine, plan_id)
    assert view is not None and view.state == "ready" and view.recipients_complete
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT name, vars FROM messages WHERE row_no = 12000"))).one()
        queued = (await conn.execute(text("SELECT count(*) FROM messages WHERE enqueued"))).scalar_one()
    assert row.name == "U12000" and row.vars == {"code": "C12000"}
    assert queued == 11999


async def test_unprocessable_work_goes_to_the_dlq_with_its_reason(
    engine: AsyncEngine, aws: MotoServer
) -> None:
    import boto3

    plan_id = await new_plan(engine)
    async with WorkQueue.open(SenderSettings()) as queue:
        url = await queue.ensure(plan_id)
        sqs = boto3.client("sqs", endpoint_url=aws.endpoint_url)
        sqs.send_message(QueueUrl=url, MessageBody="{not json")
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"plan": str(plan_id), "ids": ["x"]}))
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"plan": str(plan_id), "ids": [7]}))
        jobs = await queue.receive(plan_id, wait_seconds=1)
        jobs += await queue.receive(plan_id, wait_seconds=1)
        assert [j.ids for j in jobs] == [(7,)]
        dlq = await queue.url(plan_id, dlq=True)
        dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])[
            "Messages"
        ]
        reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
        assert len(reasons) == 2
        assert any("not JSON" in r for r in reasons) and any("positive integers" in r for r in reasons)
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        assert (
            '"maxReceiveCount": "5"' in attrs["RedrivePolicy"]
            or '"maxReceiveCount": 5' in attrs["RedrivePolicy"]
        )


# --------------------------------------------------------------------------- faults (issue 11)


async def ready_plan(engine: AsyncEngine, n: int) -> tuple[uuid.UUID, list[int]]:
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, ((i, {"email": f"f{i}@example.com"}) for i in range(1, n + 1))
    )
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE plans SET state = 'ready', recipients_complete = true WHERE id = :p"), {"p": plan_id}
        )
        ids = list(
            (
                await conn.execute(
                    text("SELECT id FROM messages WHERE plan_id = :p ORDER BY id"), {"p": plan_id}
                )
            ).scalars()
        )
    return plan_id, ids


def final_sum_holds(counts: dict[str, int]) -> bool:
    return counts["total"] == counts["sent"] + counts["failed"] + counts["stopped"] + counts["suppressed"]


async def test_stop_moves_every_unfinished_row_to_stopped_even_under_a_live_lease(
    engine: AsyncEngine,
) -> None:
    plan_id, ids = await ready_plan(engine, 10)
    # a pod holds 4 under a long lease (it may be dead: nobody can tell yet), one is sent
    held = await claims.claim(engine, plan_id, ids[:4], "dead-pod", lease_seconds=3600)
    await sendresults.record_results(engine, plan_id, [SendResult(held[0].id, "sent", ses_message_id="s0")])
    view = await plans.stop_plan(engine, plan_id, None)
    counts = view.counts
    assert (counts["processing"], counts["created"], counts["sent"], counts["stopped"]) == (0, 0, 1, 9)
    assert final_sum_holds(counts)
    # a result from the pod arrives late: SES accepted it, so the ledger says sent
    late = [SendResult(held[1].id, "sent", ses_message_id="late-1")]
    assert await sendresults.record_results(engine, plan_id, late) == 1
    counts = await plans.get_counts(engine, plan_id) or {}
    assert (counts["sent"], counts["stopped"]) == (2, 8) and final_sum_holds(counts)
    # a late failure of a stopped message changes nothing (it did not leave either way)
    await sendresults.record_results(engine, plan_id, [SendResult(held[2].id, "failed", error="x")])
    counts = await plans.get_counts(engine, plan_id) or {}
    assert (counts["failed"], counts["stopped"]) == (0, 8) and final_sum_holds(counts)


async def test_late_result_for_a_row_released_by_its_lease_is_recorded_once(engine: AsyncEngine) -> None:
    plan_id, ids = await ready_plan(engine, 2)
    await claims.claim(engine, plan_id, ids[:1], "w1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    again = await claims.claim(engine, plan_id, ids[:1], "w2", lease_seconds=60)
    assert len(again) == 1
    # w1's send (made before its lease ran out) answers late; w2 then answers too
    await sendresults.record_results(engine, plan_id, [SendResult(ids[0], "sent", ses_message_id="a")])
    await sendresults.record_results(engine, plan_id, [SendResult(ids[0], "sent", ses_message_id="b")])
    counts = await plans.get_counts(engine, plan_id) or {}
    assert (counts["sent"], counts["processing"], counts["created"]) == (1, 0, 1)


async def test_extend_lease_says_which_messages_the_worker_still_holds(engine: AsyncEngine) -> None:
    plan_id, ids = await ready_plan(engine, 3)
    await claims.claim(engine, plan_id, ids, "w1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    taken = await claims.claim(engine, plan_id, ids[:1], "w2", lease_seconds=60)  # w1 looked dead
    assert len(taken) == 1
    still = await claims.extend_lease(engine, ids, "w1", 60)
    assert sorted(still) == ids[1:]


async def test_expired_lease_with_an_ses_event_is_reconciled_as_sent_not_sent_again(
    engine: AsyncEngine,
) -> None:
    plan_id, ids = await ready_plan(engine, 3)
    await claims.claim(engine, plan_id, ids, "dead-pod", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    # SES reported a Send event (tagged with our message id) for the first message: it left
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO events (sns_message_id, plan_id, message_id, event_type) "
                "VALUES ('sns-1', :p, :m, 'send')"
            ),
            {"p": plan_id, "m": ids[0]},
        )
    orphans = await claims.claim_orphans(
        engine, plan_id, "w2", 60, limit=10, stale_seconds=60, released_below=cutoff(100)
    )
    assert sorted(c.id for c in orphans) == ids[1:]
    counts = await plans.get_counts(engine, plan_id) or {}
    assert (counts["sent"], counts["processing"]) == (1, 2)


async def test_finished_is_decided_by_the_ledger_even_while_suspended(engine: AsyncEngine) -> None:
    """Issue 9 #8: the pods that held the last messages finish them after a suspend: the plan is done."""
    plan_id = await new_plan(engine)
    await loading.insert_recipients(engine, plan_id, [(1, {"email": "last@example.com"})])
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE plans SET state = 'ready', recipients_complete = true"))
        ids = list((await conn.execute(text("SELECT id FROM messages"))).scalars())
    claimed = await claims.claim(engine, plan_id, ids, "w", 60)
    view, _ = await plans.upsert_plan(engine, plan_id, name="p", namespace="ns", spec=SPEC, suspended=True)
    assert view.state == "suspended"
    await sendresults.record_results(engine, plan_id, [SendResult(id=claimed[0].id, status="sent")])
    view = await plans.get_plan(engine, plan_id)
    assert view is not None and view.state == "done"
    view, _ = await plans.upsert_plan(engine, plan_id, name="p", namespace="ns", spec=SPEC)
    assert view.state == "done"  # resuming a finished plan leaves it finished


async def test_reset_forgets_an_unfinished_list_only(engine: AsyncEngine) -> None:
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, [(1, {"email": "a@example.com"}), (2, {"email": "b@x.org"})]
    )
    assert await loading.reset_recipients(engine, plan_id) is True
    assert (await plans.get_counts(engine, plan_id) or {})["total"] == 0
    result = await loading.insert_recipients(engine, plan_id, [(1, {"email": "a@example.com"})])
    assert (result.accepted, result.duplicates) == (1, 0)  # counted once, not as a duplicate
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE plans SET recipients_complete = true"))
    assert await loading.reset_recipients(engine, plan_id) is False
    assert (await plans.get_counts(engine, plan_id) or {})["total"] == 1


async def test_writes_by_id_look_rows_up_by_id_even_with_statistics_from_before_the_load(
    engine: AsyncEngine,
) -> None:
    """Recording results, claiming and giving back by id must not read the rest of the plan.

    Statistics taken before a list is loaded (a new database, the first big plan) say the
    plan has no rows in any status. With a plain ``plan_id = :p`` test the planner then
    answered "this plan's processing rows" from the (plan_id, status) index and joined the
    ids to it: every write of a few results read every created and processing row of the
    plan (70 ms a write in the throughput benchmark). The generic plan, the one a prepared
    statement settles on, is checked with PostgreSQL's own EXPLAIN.
    """
    from sqlalchemy.dialects import postgresql

    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE messages"))  # empty: the statistics of a new database
    plan_id = await new_plan(engine)
    await loading.insert_recipients(
        engine, plan_id, ((i, {"email": f"u{i}@example.com"}) for i in range(1, 3001))
    )
    async with engine.begin() as conn:  # two thirds held by a worker, as mid-send
        ids = list((await conn.execute(text("SELECT id FROM messages ORDER BY id"))).scalars())
        await conn.execute(
            text(
                "UPDATE messages SET status = 'processing', lease_owner = 'w1', "
                "lease_until = now() + interval '60 seconds' WHERE id = ANY(:ids)"
            ),
            {"ids": ids[:2000]},
        )
    batch = ids[:16]
    values = {
        "p": plan_id,
        "plan": plan_id,
        "ids": batch,
        "st": ["sent"] * 16,
        "sid": [f"s{i}" for i in batch],
        "err": [None] * 16,
        "at": [None] * 16,
        "reason": [None] * 16,
        "supp": SUPPRESSED_PREFIX,
        "o": "w1",
        "owner": "w1",
        "unqueue": False,
        "lease": 60.0,
        "limit": 100,
        "left_kinds": list(claims.LEFT_SES_EVENTS),
    }
    dialect = postgresql.asyncpg.dialect()  # type: ignore[attr-defined]
    statements = {
        "record_results": sendresults.RECORD_RESULTS,
        "claim": claims.CLAIM_IDS,
        "still_created": text(claims.STILL_CREATED),
        "release": claims.RELEASE,
    }
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        plans = {}
        for name, statement in statements.items():
            compiled = statement.compile(dialect=dialect)
            order = compiled.positiontup or []
            await driver.execute(f"PREPARE {name} AS {compiled.string}")
            args = ", ".join(_literal(values[key]) for key in order)  # EXECUTE takes no $n
            plans[name] = await driver.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({args})")
            await driver.execute(f"DEALLOCATE {name}")
        await driver.execute("RESET plan_cache_mode")
    by_plan = ("ix_messages_plan_id_status", "ix_messages_plan_id_bucket", "uq_messages_plan_id_email")
    for name, plan in plans.items():
        assert not [i for i in by_plan if i in str(plan)], f"{name} reads the plan's rows: {plan}"


def _literal(value: object) -> str:
    """An untyped SQL literal (PostgreSQL casts it to the prepared parameter's type)."""
    if isinstance(value, list):
        return "'{" + ",".join("NULL" if v is None else str(v) for v in value) + "}'"
    return "NULL" if value is None else f"'{value}'"

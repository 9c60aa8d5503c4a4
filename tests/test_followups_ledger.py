"""Follow-up audiences in the ledger (real PostgreSQL): who each outcome selects, taken once.

The source plan is sent through the ledger's own paths (claim, record results); the
outcomes SES and the pixel report later (delivery, open, click, bounces) are set on
its rows as the event store leaves them.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.api import HEADERS, PLAN, Identity, NullQueue, api_without_sqs, make_plan, put

from emailplan.contract.followups import FollowUpOutcome, FromPlanSource
from emailplan.contract.plans import LoadSourceKind
from emailplan.sender.store import claims, followups, loading, plans, sendresults
from emailplan.sender.store.sendresults import SendResult

SPEC = {"from": "News <news@example.com>", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}

# Each source recipient by what happened to its message.
FATES = {
    "opened": "opened_at = now(), delivered_at = now()",
    "clicked": "opened_at = now(), clicked_at = now(), delivered_at = now()",
    "delivered": "delivered_at = now()",
    "silent": "",  # sent, nothing heard since
    "soft": "soft_bounced_at = now()",
    "hard": "bounced_at = now()",
    "failed": None,  # SES refused it
}
EXPECTED = {
    FollowUpOutcome.NOT_OPENED: {"delivered", "silent", "soft"},
    FollowUpOutcome.NOT_CLICKED: {"opened", "delivered", "silent", "soft"},
    FollowUpOutcome.DELIVERED: {"opened", "clicked", "delivered"},
    FollowUpOutcome.SOFT_BOUNCED: {"soft"},
    FollowUpOutcome.FAILED: {"failed"},
}


async def new_plan(engine: AsyncEngine) -> uuid.UUID:
    plan_id = uuid.uuid4()
    await plans.upsert_plan(engine, plan_id, name=f"p-{plan_id.hex[:6]}", namespace="ns", spec=SPEC)
    return plan_id


async def sent_source(engine: AsyncEngine) -> uuid.UUID:
    """A finished source plan: one recipient per fate, sent or refused through the ledger."""
    source = await new_plan(engine)
    rows = [(i, {"email": f"{fate}@example.com", "name": fate.title()}) for i, fate in enumerate(FATES, 1)]
    await loading.insert_recipients(engine, source, rows)
    queue = NullQueue()
    await loading.complete_recipients(engine, source, queue)
    ids = [i for batch in queue.enqueued for i in batch]
    claimed = await claims.claim(engine, source, ids, "w", 60)
    results = [
        SendResult(c.id, "failed", error="MessageRejected: no")
        if c.email.startswith("failed")
        else SendResult(c.id, "sent", ses_message_id=f"ses-{c.id}")
        for c in claimed
    ]
    await sendresults.record_results(engine, source, results)
    async with engine.begin() as conn:
        for fate, sets in FATES.items():
            if sets:
                await conn.execute(
                    text(f"UPDATE messages SET {sets} WHERE plan_id = :p AND email = :e"),
                    {"p": source, "e": f"{fate}@example.com"},
                )
    view = await plans.get_plan(engine, source)
    assert view is not None and view.state == "done"
    return source


async def audience(engine: AsyncEngine, plan_id: uuid.UUID) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email, status FROM messages WHERE plan_id = :p"), {"p": plan_id}
        )
        return {email.split("@")[0]: status for email, status in rows.all()}


@pytest.mark.parametrize("outcome", list(FollowUpOutcome))
async def test_each_outcome_selects_exactly_its_recipients(
    engine: AsyncEngine, outcome: FollowUpOutcome
) -> None:
    source = await sent_source(engine)
    follow = await new_plan(engine)
    queue = NullQueue()
    job = await followups.load_audience(
        engine, follow, FromPlanSource(plan_id=source, outcome=outcome), queue
    )
    assert set(await audience(engine, follow)) == EXPECTED[outcome]
    assert job.accepted == len(EXPECTED[outcome]) and job.suppressed == 0
    assert job.source is LoadSourceKind.FROM_PLAN
    assert sum(len(b) for b in queue.enqueued) == len(EXPECTED[outcome])  # all queued, once
    view = await plans.describe_plan(engine, follow)
    assert view is not None and view.recipients_loaded and view.counts.total == len(EXPECTED[outcome])


async def test_suppressions_made_since_apply_and_the_audience_is_taken_once(engine: AsyncEngine) -> None:
    source = await sent_source(engine)
    await loading.add_suppressions(engine, ["silent@example.com"], "unsubscribe")
    follow = await new_plan(engine)
    request = FromPlanSource(plan_id=source, outcome=FollowUpOutcome.NOT_OPENED)
    queue = NullQueue()
    job = await followups.load_audience(engine, follow, request, queue)
    assert await audience(engine, follow) == {
        "delivered": "created",
        "soft": "created",
        "silent": "suppressed",
    }
    assert (job.accepted, job.suppressed) == (2, 1)
    queued = sorted(i for b in queue.enqueued for i in b)
    assert len(queued) == 2

    # The source changes afterwards (another non-opener appears); asking again adds no one.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE messages SET opened_at = NULL WHERE plan_id = :p AND email = 'opened@example.com'"),
            {"p": source},
        )
    again = await followups.load_audience(engine, follow, request, queue)
    assert (again.accepted, again.suppressed) == (2, 1)
    assert set(await audience(engine, follow)) == {"delivered", "soft", "silent"}
    assert sorted(i for b in queue.enqueued for i in b) == queued  # nothing queued twice
    counts = await plans.get_counts(engine, follow)
    assert counts is not None and (counts["total"], counts["created"], counts["suppressed"]) == (3, 2, 1)


async def test_a_source_still_sending_or_unknown_is_refused(engine: AsyncEngine) -> None:
    source = await new_plan(engine)
    await loading.insert_recipients(engine, source, [(1, {"email": "a@example.com"})])
    await loading.complete_recipients(engine, source, NullQueue())
    follow = await new_plan(engine)
    request = FromPlanSource(plan_id=source, outcome=FollowUpOutcome.NOT_OPENED)
    with pytest.raises(followups.SourceNotReadyError, match="not done") as sending:
        await followups.load_audience(engine, follow, request, NullQueue())
    assert not sending.value.missing
    unknown = FromPlanSource(plan_id=uuid.uuid4(), outcome=FollowUpOutcome.NOT_OPENED)
    with pytest.raises(followups.SourceNotReadyError, match="unknown") as missing:
        await followups.load_audience(engine, follow, unknown, NullQueue())
    assert missing.value.missing
    itself = FromPlanSource(plan_id=follow, outcome=FollowUpOutcome.NOT_OPENED)
    with pytest.raises(followups.SourceNotReadyError, match="itself"):
        await followups.load_audience(engine, follow, itself, NullQueue())
    assert await audience(engine, follow) == {}


async def test_the_api_names_bad_fields_and_answers_the_same_job_again(
    migrated: str, ident: Identity
) -> None:
    async with api_without_sqs(migrated, ident) as api:
        sending, _, _ = await make_plan(api, ["busy@example.com"], send=False)
        source, _, _ = await make_plan(api, [f"r{i}@example.com" for i in range(5)])
        follow = uuid.uuid4()
        assert (await put(api, follow, {**PLAN, "name": "reminder"})).status == 201

        async def ask(body: dict[str, object]) -> tuple[int, dict[str, object]]:
            resp = await api.client.post(
                f"/v1/plans/{follow}/recipients/from-plan", json=body, headers=HEADERS
            )
            return resp.status, await resp.json()

        status, body = await ask({"planId": str(source), "outcome": "opened"})
        assert status == 400 and body["error"]["field"] == "outcome", body
        status, body = await ask({"planId": str(uuid.uuid4()), "outcome": "notOpened"})
        assert status == 400 and "unknown" in body["error"]["message"], body
        status, body = await ask({"planId": str(sending), "outcome": "notOpened"})
        assert status == 409 and "not done" in body["error"]["message"], body

        status, first = await ask({"planId": str(source), "outcome": "notOpened"})
        assert status == 200 and first["accepted"] == 5 and first["source"] == "fromPlan", first
        status, again = await ask({"planId": str(source), "outcome": "notOpened"})
        assert status == 200 and again["accepted"] == 5
        view = await (await api.client.get(f"/v1/plans/{follow}", headers=HEADERS)).json()
        assert view["recipientsLoaded"] and view["counts"]["total"] == 5

"""Counts are exact after a scripted mix of sends, SNS events, pixel hits, clicks, unsubscribes, replays."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from support.api import (
    LiveApi,
    make_plan,
    notification,
    ses_event,
)

from emailplan.sender.api.state import STATE

HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15"


async def test_scripted_mix_gives_exact_counts(api: LiveApi) -> None:
    emails = [f"r{i:02d}@example.com" for i in range(50)]
    plan, ids, ses = await make_plan(api, emails)
    other, other_ids, _ = await make_plan(api, ["o1@example.com", "o2@example.com"], send=False)
    e = emails
    posted: list[dict[str, Any]] = []

    def sns(kind: str, who: list[str], **kw: Any) -> dict[str, Any]:
        doc = notification(
            api.ident,
            api.certs.cert_url,
            ses_event(kind, ses[who[0]], who, **kw),
            version=random.choice("12"),
        )
        posted.append(doc)
        return doc

    script: list[dict[str, Any]] = []
    script += [sns("Delivery", [x]) for x in e[:40]]
    script += [sns("Bounce", [e[40]]), sns("Bounce", [e[41]], shape="notification")]
    script += [sns("Bounce", [e[42], "cc@example.com"])]  # one notification, two recipients
    script += [
        sns("Bounce", [e[43]], bounce_type="Transient"),
        sns("Bounce", [e[44]], bounce_type="Undetermined"),
    ]
    script += [sns("Complaint", [e[0]]), sns("Complaint", [e[1]], shape="notification")]
    script += [sns("Reject", [e[45]]), sns("DeliveryDelay", [e[46]]), sns("Send", [e[47]])]
    script += [sns("Rendering Failure", [e[48]])]
    script += [sns("Open", [e[2]]), sns("Open", [e[20]]), sns("Click", [e[21]])]  # SES-side tracking too
    random.Random(7).shuffle(script)
    for doc in script:
        resp = await api.post_sns(doc)
        assert resp.status == 200, await resp.text()

    async def pixel(email: str, ua: str = HUMAN_UA) -> None:
        r = await api.client.get(
            "/v1/events/open", params={"requestId": api.token("open", ids[email])}, headers={"User-Agent": ua}
        )
        assert r.status == 200

    # Pixel: 10 people open (3 times each), 3 machine-only opens, e[2] also opened via SES.
    await asyncio.gather(*(pixel(x) for x in e[2:12] for _ in range(3)))
    await asyncio.gather(*(pixel(x, "Mozilla/5.0") for x in e[30:33]))
    # Clicks: e[3] (already opened), e[13], e[14] (not opened yet), e[21] (clicked via SES already).
    for x in (e[3], e[13], e[14], e[21], e[13]):
        url = f"https://example.com/{x}"
        r = await api.client.get(
            "/v1/events/click", params={"t": api.token("click", ids[x], url), "u": url}, allow_redirects=False
        )
        assert r.status == 302
    # Unsubscribes: three people, one of them twice.
    for x in (e[5], e[6], e[7], e[7]):
        r = await api.client.post(
            "/v1/unsubscribe",
            params={"t": api.token("unsub", ids[x])},
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status == 200
    # Replays of every SNS message, concurrently and out of order.
    replays = list(posted)
    random.Random(8).shuffle(replays)
    answers = await asyncio.gather(*(api.post_sns(doc) for doc in replays))
    assert all(a.status == 200 for a in answers)
    assert {(await a.json())["status"] for a in answers} == {"duplicate"}
    await api.client.server.app[STATE].opens.close()  # graceful-shutdown flush writes what is buffered

    counts = await api.counts(plan)
    expected = {
        "total": 50,
        "created": 0,
        "processing": 0,
        "sent": 50,
        "failed": 0,
        "stopped": 0,
        "suppressed": 0,
        "delivered": 40,
        "bounced": 3,
        "complained": 2,
        "sesRejected": 1,
        "unsubscribed": 3,
        # pixel 10 (e2..e11) + SES open e20 + clicks on unopened e13, e14, e21 = 14
        "opened": 14,
        "openedMachine": 3,  # camelCase like every count
        "clicked": 4,  # e3, e13, e14, e21
    }
    assert {k: counts[k] for k in expected} == expected
    other_counts = await api.counts(other)
    assert all(v == 0 for k, v in other_counts.items() if k not in ("total", "created", "planId")), (
        other_counts
    )
    suppressions = await api.scalar(
        "SELECT string_agg(email || ':' || reason, ',' ORDER BY email) FROM suppressions"
    )
    assert suppressions == ",".join(
        sorted(
            [
                "cc@example.com:bounce",
                f"{e[0]}:complaint",
                f"{e[1]}:complaint",
                f"{e[40]}:bounce",
                f"{e[41]}:bounce",
                f"{e[42]}:bounce",
                f"{e[5]}:unsubscribe",
                f"{e[6]}:unsubscribe",
                f"{e[7]}:unsubscribe",
            ]
        )
    )
    assert await api.scalar("SELECT count(*) FROM events WHERE event_type <> 'open_machine'") == len(posted)
    assert other_ids


async def test_one_batch_with_several_kinds_for_one_message_counts_each_once(api: LiveApi) -> None:
    from emailplan.sender.sesevents import normalise
    from emailplan.sender.store import eventstore

    plan, ids, ses = await make_plan(api, ["multi@example.com", "other@example.com"])
    m, o = "multi@example.com", "other@example.com"
    docs = [
        ses_event("Delivery", ses[m], [m]),
        ses_event("Open", ses[m], [m]),
        ses_event("Click", ses[m], [m]),
        ses_event("Complaint", ses[m], [m]),
        ses_event("Delivery", ses[m], [m]),
        ses_event("Bounce", ses[o], [o]),
        ses_event("Reject", ses[o], [o]),
    ]
    records = []
    for i, doc in enumerate(docs):
        event = normalise(doc)
        assert event is not None
        records.append(eventstore.SesRecord(f"batch-{i}", event, "{}"))
    hot = eventstore.HotConnections(api.engine, 2)
    try:
        results = await eventstore.record_ses_events(hot, records)
        assert [r.duplicate for r in results] == [False] * len(docs)
        assert all(r.message_id == ids[m] for r in results[:5])
        again = await eventstore.record_ses_events(hot, records)
        assert all(r.duplicate for r in again)
    finally:
        await hot.close()
    counts = await api.counts(plan)
    assert {
        k: counts[k] for k in ("delivered", "opened", "clicked", "complained", "bounced", "sesRejected")
    } == {"delivered": 1, "opened": 1, "clicked": 1, "complained": 1, "bounced": 1, "sesRejected": 1}
    assert "rejected" not in counts  # the load job's word for refused rows, never an SES count


async def test_the_event_statement_is_planned_once_however_small_the_first_batches(engine: Any) -> None:
    """The SNS write runs one prepared statement per batch of events. PostgreSQL plans at least
    the first five executions for their own arrays, and goes on doing so when its estimates say
    so: with 20,000 messages and single events first (as after a start), every later batch of ten
    cost the database twice the CPU. The hot connections hold the statement to its one generic
    plan, so PostgreSQL's own count of custom plans stays 0 (it was 5 before)."""
    from emailplan.sender.sesevents import normalise
    from emailplan.sender.store import eventstore

    hot = eventstore.HotConnections(engine, 1)
    try:
        for i in range(8):  # one event per batch, as at low traffic
            event = normalise(ses_event("Delivery", f"ses-unknown-{i}", [f"n{i}@example.com"]))
            assert event is not None
            await eventstore.record_ses_events(hot, [eventstore.SesRecord(f"single-{i}", event, "{}")])
        async with hot.acquire() as pg:
            plans = await pg.fetch(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE $1",
                "%INSERT INTO events%",
            )
    finally:
        await hot.close()
    assert [(p["generic_plans"], p["custom_plans"]) for p in plans] == [(8, 0)]

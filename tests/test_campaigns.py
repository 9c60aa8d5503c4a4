"""Campaigns on the data plane: the released share of a list and A/B variants.

What an operator (or a campaign owner) would notice: only the released share of
the list is queued and sent, a share once released is never taken back, each
recipient of the test cohort receives the variant its bucket gives and the rest
the winner, everyone exactly once (also when a worker is killed mid-cohort), the
per-variant counts add up to what SES received, and a variant that does not
compile is refused at registration with the field named.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from support.api import (
    HEADERS,
    PLAN,
    Identity,
    LiveApi,
    NullQueue,
    api_without_sqs,
    notification,
    put,
    ses_event,
    start_api,
    stop_api,
    upload,
)
from support.worker import Workers, addressee, emails, raw_sent, received, wait_exit, worker_env

from devenv.moto import MotoServer
from emailplan.contract.cohorts import cutoff, variant_index
from emailplan.sender.api.state import STATE

VARIANTS = [
    {"name": "plain", "subject": "Plain hello {{ name }}"},
    {"name": "bold", "subject": "Bold hello {{ name }}", "html": "<p><b>Hi {{ name }}</b></p>"},
    {"name": "short", "subject": "Hi!", "fromName": "The Shop"},
]
NAMES = [v["name"] for v in VARIANTS]
AB_PLAN = {**PLAN, "ratePerSecond": 300, "variants": VARIANTS, "testPercent": 30, "releasePercent": 30}


def ndjson(addresses: list[str]) -> bytes:
    return "".join(f'{{"email": "{a}", "name": "N{i}"}}\n' for i, a in enumerate(addresses)).encode()


async def view(api: LiveApi, plan_id: uuid.UUID) -> dict[str, Any]:
    resp = await api.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def buckets(api: LiveApi, plan_id: uuid.UUID) -> dict[str, int]:
    from sqlalchemy import text

    async with api.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT email, bucket FROM messages WHERE plan_id = :p"), {"p": plan_id}
        )
        return {r.email: int(r.bucket) for r in rows}


async def ids_by_email(api: LiveApi, plan_id: uuid.UUID) -> dict[int, str]:
    from sqlalchemy import text

    async with api.engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, email FROM messages WHERE plan_id = :p"), {"p": plan_id})
        return {int(r.id): r.email for r in rows}


def expected_variant(bucket: int, winner: str | None) -> str | None:
    index = variant_index(
        bucket, test_percent=30, variants=len(NAMES), winner=NAMES.index(winner) if winner else None
    )
    return None if index is None else NAMES[index]


# ------------------------------------------------------------------ released share (no workers)


@pytest.fixture
async def api(migrated: str, ident: Identity) -> AsyncIterator[LiveApi]:
    async with api_without_sqs(migrated, ident) as live:
        yield live


def queued(api: LiveApi) -> list[int]:
    sink = api.client.server.app[STATE].queue
    assert isinstance(sink, NullQueue)
    return [i for batch in sink.enqueued for i in batch]


async def test_only_the_released_share_is_queued_and_it_never_shrinks(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    assert (await put(api, plan_id, AB_PLAN)).status == 201
    resp = await upload(api, plan_id, ndjson(emails(600)), "application/x-ndjson")
    assert resp.status == 200, await resp.text()
    resp = await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
    assert resp.status == 200, await resp.text()

    by_bucket = await buckets(api, plan_id)
    by_id = await ids_by_email(api, plan_id)
    cohort = {e for e, b in by_bucket.items() if b < cutoff(30)}
    assert 100 < len(cohort) < 260  # about 30 % of 600
    assert {by_id[i] for i in queued(api)} == cohort and len(queued(api)) == len(cohort)
    shown = await view(api, plan_id)
    assert shown["releasePercent"] == 30 and shown["releasedBacklog"] == len(cohort)
    assert shown["counts"]["created"] == 600 and shown["state"] == "ready"

    # Lowered: ignored (rows once queued cannot be called back); the same share again queues nothing.
    resp = await put(api, plan_id, {**AB_PLAN, "releasePercent": 10})
    assert resp.status == 200 and (await resp.json())["releasePercent"] == 30
    assert (await put(api, plan_id, AB_PLAN)).status == 200
    assert len(queued(api)) == len(cohort)

    # The winner and the whole list: the rest is queued, each row once in all.
    resp = await put(api, plan_id, {**AB_PLAN, "winner": "bold", "releasePercent": 100})
    shown = await resp.json()
    assert shown["releasePercent"] == 100 and shown["winner"] == "bold" and shown["releasedBacklog"] == 600
    assert sorted(queued(api)) == sorted(by_id)


class UnreachableQueue(NullQueue):
    """SQS out of reach (what the real client raises when it cannot connect)."""

    async def enqueue(self, plan_id: uuid.UUID, batches: Any) -> None:
        raise ConnectionRefusedError("work queue unreachable")


async def test_a_raise_that_could_not_be_queued_is_not_in_force_so_it_is_sent_again(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, {**PLAN, "releasePercent": 20})
    await upload(api, plan_id, ndjson(emails(300)), "application/x-ndjson")
    await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
    first = len(queued(api))
    working = api.client.server.app[STATE].queue
    api.client.server.app[STATE].queue = UnreachableQueue()
    resp = await put(api, plan_id, {**PLAN, "releasePercent": 70})
    assert resp.status == 503, await resp.text()
    shown = await view(api, plan_id)
    assert shown["releasePercent"] == 20, "a share whose rows were not queued is not in force"
    api.client.server.app[STATE].queue = working
    resp = await put(api, plan_id, {**PLAN, "releasePercent": 70})  # the operator's retry
    assert resp.status == 200 and (await resp.json())["releasePercent"] == 70
    by_bucket = await buckets(api, plan_id)
    by_id = await ids_by_email(api, plan_id)
    assert {by_id[i] for i in queued(api)} == {e for e, b in by_bucket.items() if b < cutoff(70)}
    assert len(queued(api)) > first


async def test_unreleased_rows_keep_the_plan_open_and_stop_with_it(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, {**PLAN, "releasePercent": 0})
    await upload(api, plan_id, ndjson(emails(50)), "application/x-ndjson")
    await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
    shown = await view(api, plan_id)
    assert queued(api) == [] and shown["releasedBacklog"] == 0 and shown["variantCounts"] == []
    assert shown["state"] == "ready", "a plan with unreleased rows is not done"
    resp = await api.client.post(f"/v1/plans/{plan_id}/stop", headers=HEADERS)
    stopped = await resp.json()
    assert stopped["state"] == "stopped" and stopped["counts"]["stopped"] == 50
    assert stopped["counts"]["created"] == 0


async def test_an_ab_test_added_to_a_stored_list_counts_every_row_of_its_cohort(api: LiveApi) -> None:
    """A plan that sends its whole list stores its rows outside the bucket index (a load is
    cheaper so); an A/B test added later, between two uploads, must still count every row of
    its cohort: those stored before it and those stored after."""
    plan_id = uuid.uuid4()
    addresses = emails(600)
    assert (await put(api, plan_id, PLAN)).status == 201
    assert (await upload(api, plan_id, ndjson(addresses[:300]), "application/x-ndjson")).status == 200
    ab = {**PLAN, "variants": VARIANTS, "testPercent": 30}
    assert (await put(api, plan_id, ab)).status == 200
    assert (await upload(api, plan_id, ndjson(addresses[300:]), "application/x-ndjson")).status == 200
    resp = await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
    assert resp.status == 200, await resp.text()

    by_bucket = await buckets(api, plan_id)
    want = collections.Counter(expected_variant(b, None) for b in by_bucket.values() if b < cutoff(30))
    assert sum(want.values()) > 100 and len(want) == len(NAMES)
    shown = await view(api, plan_id)
    assert {v["name"]: v["recipients"] for v in shown["variantCounts"]} == dict(want)


HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15"
MACHINE_UA = "Mozilla/5.0"  # what mail privacy proxies send: not a person's open


async def test_per_variant_counts_follow_the_events_of_the_test_cohort(api: LiveApi) -> None:
    from sqlalchemy import text

    from emailplan.sender.store import claims, sendresults

    plan_id = uuid.uuid4()
    body = {**AB_PLAN, "testPercent": 50, "releasePercent": 50}
    await put(api, plan_id, body)
    await upload(api, plan_id, ndjson(emails(150, prefix="v")), "application/x-ndjson")
    await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
    by_bucket = await buckets(api, plan_id)
    by_id = await ids_by_email(api, plan_id)
    ids = {e: i for i, e in by_id.items()}
    released = sorted(queued(api))
    # A pod sent 90 % of the cohort (the rest still waits), an hour ago (no machine-open window).
    sent = released[: len(released) * 9 // 10]
    assert len(await claims.claim(api.engine, plan_id, sent, "pod", 60)) == len(sent)
    ses = {i: f"ses-{uuid.uuid4().hex}" for i in sent}
    await sendresults.record_results(
        api.engine, plan_id, [sendresults.SendResult(i, "sent", ses_message_id=ses[i]) for i in sent]
    )
    async with api.engine.begin() as conn:
        await conn.execute(text("UPDATE messages SET sent_at = now() - interval '1 hour'"))

    who = [by_id[i] for i in sent]
    events = {
        "delivered": who[:-6],
        "bounced": who[-6:-3],
        "complained": who[:4],
        "opened": who[4:40],
        "clicked": who[30:50],
    }
    kinds = {"delivered": "Delivery", "bounced": "Bounce", "complained": "Complaint"}
    for count, kind in kinds.items():
        for x in events[count]:
            doc = notification(api.ident, api.certs.cert_url, ses_event(kind, ses[ids[x]], [x]))
            assert (await api.post_sns(doc)).status == 200
    for x in events["opened"]:
        resp = await api.client.get(
            "/v1/events/open",
            params={"requestId": api.token("open", ids[x])},
            headers={"User-Agent": HUMAN_UA},
        )
        assert resp.status == 200
    for x in who[40:60]:  # machine opens: not what the winner is chosen from
        await api.client.get(
            "/v1/events/open",
            params={"requestId": api.token("open", ids[x])},
            headers={"User-Agent": MACHINE_UA},
        )
    for x in events["clicked"]:
        url = f"https://shop.example.com/{x}"
        resp = await api.client.get(
            "/v1/events/click", params={"t": api.token("click", ids[x], url), "u": url}, allow_redirects=False
        )
        assert resp.status == 302

    cohort = [e for e, b in by_bucket.items() if b < cutoff(50)]
    name_of = {e: NAMES[by_bucket[e] % len(NAMES)] for e in cohort}
    want = {n: {"name": n, "recipients": 0, "sent": 0} | dict.fromkeys(events, 0) for n in NAMES}
    for e in cohort:
        want[name_of[e]]["recipients"] += 1
    for x in who:
        want[name_of[x]]["sent"] += 1
    events["opened"] = sorted(set(events["opened"]) | set(events["clicked"]))  # a click proves an open
    for count, people in events.items():
        for x in people:
            want[name_of[x]][count] += 1

    async def settled() -> dict[str, Any]:
        for _ in range(100):  # pixel opens are written in batches (every 0.1 s here)
            shown = await view(api, plan_id)
            if variant_counts(shown) == want:
                break
            await asyncio.sleep(0.1)
        return shown

    shown = await settled()
    for name in NAMES:
        assert variant_counts(shown)[name] == want[name]
    assert shown["counts"]["opened"] == len(events["opened"])
    resp = await api.client.get(f"/v1/results/count/{plan_id}", headers=HEADERS)
    stats = await resp.json()
    assert stats["sent"] == len(sent) and {v["name"]: v for v in stats["variants"]} == want
    plain = uuid.uuid4()
    await put(api, plain, PLAN)
    resp = await api.client.get(f"/v1/results/count/{plain}", headers=HEADERS)
    assert "variants" not in await resp.json()


@pytest.mark.parametrize(
    ("variants", "field"),
    [
        ([{"name": "a"}, {"name": "b", "subject": "Hi {{ name"}], "variants[1].subject"),
        ([{"name": "a", "html": "{% if %}x"}, {"name": "b"}], "variants[0].html"),
        ([{"name": "a"}, {"name": "b", "text": "{{ 1 + }}"}], "variants[1].text"),
    ],
)
async def test_a_variant_that_does_not_compile_is_refused_naming_it(
    api: LiveApi, variants: list[dict[str, Any]], field: str
) -> None:
    plan_id = uuid.uuid4()
    resp = await put(api, plan_id, {**PLAN, "variants": variants, "testPercent": 20})
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["field"] == field and err["message"]
    assert (await api.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).status == 404


async def test_broken_plan_template_is_refused_naming_the_field(api: LiveApi) -> None:
    resp = await put(api, uuid.uuid4(), {**PLAN, "html": "<p>{{ name </p>"})
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "html"


# ------------------------------------------------------------------ A/B test end to end (workers, moto)


@pytest.fixture
async def sqs_api(migrated: str, ident: Identity, aws: MotoServer) -> AsyncIterator[LiveApi]:
    live = await start_api(migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url)
    try:
        yield live
    finally:
        await stop_api(live)


async def load(api: LiveApi, body: dict[str, Any], addresses: list[str]) -> uuid.UUID:
    plan_id = uuid.uuid4()
    resp = await put(api, plan_id, body)
    assert resp.status == 201, await resp.text()
    resp = await api.client.post(
        f"/v1/plans/{plan_id}/recipients?complete=true",
        data=ndjson(addresses),
        headers={**HEADERS, "Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    return plan_id


async def wait_view(
    api: LiveApi, plan_id: uuid.UUID, pred: Any, timeout: float, workers: Workers
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        shown = await view(api, plan_id)
        if pred(shown):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"plan view {shown} not reached in {timeout}s:\n{workers.logs()}")
        await asyncio.sleep(0.3)


def variant_of(msg: EmailMessage) -> str:
    return str(msg["X-EmailPlan-Variant"])


def check_variants(msgs: list[EmailMessage], by_bucket: dict[str, int], winner: str | None) -> None:
    """Each email carries the variant of its recipient's bucket, and looks like that variant."""
    subjects = {"plain": "Plain hello ", "bold": "Bold hello ", "short": "Hi!"}
    for msg in msgs:
        want = expected_variant(by_bucket[addressee(msg)], winner)
        assert want is not None, f"{addressee(msg)} is outside the test cohort and got mail without a winner"
        assert variant_of(msg) == want
        assert str(msg["Subject"]).startswith(subjects[want])
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert ("<b>Hi " in html) == (want == "bold")
        assert (msg["From"].addresses[0].display_name == "The Shop") == (want == "short")


def variant_counts(shown: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {v["name"]: v for v in shown["variantCounts"]}


async def test_ab_cohort_then_winner_sends_everyone_once_with_their_variant(
    sqs_api: LiveApi, ses_identity: None, workers: Workers, migrated: str, aws: MotoServer
) -> None:
    api = sqs_api
    everyone = emails(600)
    plan_id = await load(api, AB_PLAN, everyone)
    by_bucket = await buckets(api, plan_id)
    cohort = {e for e, b in by_bucket.items() if b < cutoff(30)}
    proc = workers.start(worker_env(migrated, plan_id))

    shown = await wait_view(api, plan_id, lambda v: v["counts"]["sent"] >= len(cohort), 120, workers)
    await asyncio.sleep(1.0)  # nothing beyond the cohort may follow
    msgs = received(aws)
    assert {addressee(m) for m in msgs} == cohort and len(msgs) == len(cohort)
    check_variants(msgs, by_bucket, winner=None)
    shown = await view(api, plan_id)
    assert shown["state"] == "ready" and shown["releasedBacklog"] == 0
    assert shown["counts"]["created"] == 600 - len(cohort)
    assert proc.poll() is None, "the worker left a plan whose list is not all released"
    per_variant = variant_counts(shown)
    assert list(per_variant) == NAMES
    got = collections.Counter(variant_of(m) for m in msgs)
    for name in NAMES:
        assert per_variant[name]["recipients"] == per_variant[name]["sent"] == got[name] > 20

    resp = await put(api, plan_id, {**AB_PLAN, "winner": "bold", "releasePercent": 100})
    assert resp.status == 200, await resp.text()
    await wait_exit([proc], workers, 120)
    msgs = received(aws)
    to = collections.Counter(addressee(m) for m in msgs)
    assert set(to) == set(everyone) and max(to.values()) == 1
    check_variants(msgs, by_bucket, winner="bold")
    shown = await view(api, plan_id)
    assert shown["state"] == "done" and shown["counts"]["sent"] == 600
    # The counts stay those of the test cohort: the winner's later sends are not part of the test.
    assert variant_counts(shown)["bold"]["sent"] == got["bold"]


async def test_worker_killed_mid_cohort_still_sends_each_recipient_its_variant(
    sqs_api: LiveApi, ses_identity: None, workers: Workers, migrated: str, aws: MotoServer
) -> None:
    api = sqs_api
    everyone = emails(600, prefix="k")
    plan_id = await load(api, {**AB_PLAN, "ratePerSecond": 40}, everyone)
    by_bucket = await buckets(api, plan_id)
    cohort = {e for e, b in by_bucket.items() if b < cutoff(30)}
    env = worker_env(migrated, plan_id, EMAILPLAN_LEASE_SECONDS="3")
    first = workers.start(env)
    shown = await wait_view(api, plan_id, lambda v: v["counts"]["sent"] >= 40, 60, workers)
    os.killpg(first.pid, signal.SIGKILL)  # the whole pod, as a node kills it (workers are not its children)
    first.wait(10)
    await asyncio.sleep(0.5)  # a request written just before the kill may still be in moto's hands
    in_flight_at_kill = len(raw_sent(aws)) - (await view(api, plan_id))["counts"]["sent"]

    second = workers.start(env)
    await wait_view(api, plan_id, lambda v: v["counts"]["sent"] >= len(cohort), 120, workers)
    resp = await put(
        api, plan_id, {**AB_PLAN, "ratePerSecond": 300, "winner": "short", "releasePercent": 100}
    )
    assert resp.status == 200
    await wait_exit([second], workers, 120)

    msgs = received(aws)
    to = collections.Counter(addressee(m) for m in msgs)
    assert set(to) == set(everyone), "a recipient was lost"
    # Only what SES accepted but the ledger had not recorded at the kill may repeat.
    assert sum(v - 1 for v in to.values()) <= in_flight_at_kill
    check_variants(msgs, by_bucket, winner="short")
    per_recipient = collections.defaultdict(set)
    for m in msgs:
        per_recipient[addressee(m)].add(variant_of(m))
    assert max(len(v) for v in per_recipient.values()) == 1, "somebody received two variants"
    shown = await view(api, plan_id)
    assert shown["state"] == "done" and shown["counts"]["sent"] == 600


async def test_rows_without_a_decided_variant_are_given_back_unsent(
    sqs_api: LiveApi, ses_identity: None, workers: Workers, migrated: str, aws: MotoServer
) -> None:
    # A wrong operator releases more than the test cohort before choosing a winner.
    api = sqs_api
    everyone = emails(200, prefix="u")
    plan_id = await load(api, {**AB_PLAN, "releasePercent": 60}, everyone)
    by_bucket = await buckets(api, plan_id)
    cohort = {e for e, b in by_bucket.items() if b < cutoff(30)}
    proc = workers.start(worker_env(migrated, plan_id))
    await wait_view(api, plan_id, lambda v: v["counts"]["sent"] >= len(cohort), 120, workers)
    await asyncio.sleep(2.0)
    assert {addressee(m) for m in received(aws)} == cohort
    assert "no variant decided" in workers.logs()
    shown = await view(api, plan_id)
    assert shown["counts"]["processing"] == 0 and shown["counts"]["created"] == 200 - len(cohort)

    await put(api, plan_id, {**AB_PLAN, "releasePercent": 60, "winner": "plain"})
    await put(api, plan_id, {**AB_PLAN, "releasePercent": 100, "winner": "plain"})
    await wait_exit([proc], workers, 120)
    msgs = received(aws)
    to = collections.Counter(addressee(m) for m in msgs)
    assert set(to) == set(everyone) and max(to.values()) == 1
    check_variants(msgs, by_bucket, winner="plain")

"""The SNS endpoint against a live server and real PostgreSQL, with messages signed like SNS signs them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support.api import (
    OTHER_TOPIC,
    Identity,
    LiveApi,
    confirmation,
    make_identity,
    make_plan,
    notification,
    ses_event,
    start_api,
    stop_api,
)


async def events_count(api: LiveApi) -> int:
    return int(await api.scalar("SELECT count(*) FROM events"))


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_delivery_is_recorded_once(api: LiveApi, version: str) -> None:
    plan, _ids, ses = await make_plan(api, ["ann@example.com"])
    doc = notification(
        api.ident,
        api.certs.cert_url,
        ses_event("Delivery", ses["ann@example.com"], ["ann@example.com"]),
        version=version,
    )
    first = await api.post_sns(doc, **{"x-amz-sns-message-type": "Notification"})
    assert first.status == 200 and (await first.json())["status"] == "recorded"
    again = await api.post_sns(doc)
    assert again.status == 200 and (await again.json())["status"] == "duplicate"
    counts = await api.counts(plan)
    assert counts["delivered"] == 1 and counts["sent"] == 1
    assert await events_count(api) == 1
    assert api.certs.cert_hits == 1


async def test_refused_messages_record_nothing(api: LiveApi) -> None:
    plan, _ids, ses = await make_plan(api, ["bob@example.com"])
    event = ses_event("Bounce", ses["bob@example.com"], ["bob@example.com"])
    good = notification(api.ident, api.certs.cert_url, event, version="2")
    other = make_identity()
    cases = {
        "wrong key": notification(other, api.certs.cert_url, event),
        "changed field": {
            **good,
            "Message": json.dumps(ses_event("Complaint", ses["bob@example.com"], ["bob@example.com"])),
        },
        "changed id": {**good, "MessageId": "replayed-with-new-id"},
        "unknown topic": notification(api.ident, api.certs.cert_url, event, topic=OTHER_TOPIC),
        "http cert url": notification(api.ident, api.certs.cert_url.replace("https://", "http://"), event),
        "foreign cert host": notification(
            api.ident, "https://evil.example/SimpleNotificationService-x.pem", event
        ),
        "bad version": {**good, "SignatureVersion": "9"},
    }
    for name, doc in cases.items():
        resp = await api.post_sns(doc)
        assert resp.status == 403, name
        body = await resp.json()
        assert "message" in body["error"], name
    for junk in (b"", b"{", b"[]", b'{"Type":"Notification"}', "é".encode("latin-1")):
        resp = await api.post_sns(junk)
        assert resp.status == 400, junk
    assert await events_count(api) == 0
    assert int(await api.scalar("SELECT count(*) FROM suppressions")) == 0
    assert (await api.counts(plan))["bounced"] == 0
    # The genuine message still goes through afterwards.
    resp = await api.post_sns(good)
    assert resp.status == 200
    assert (await api.counts(plan))["bounced"] == 1


async def test_hard_bounce_and_complaint_suppress_soft_bounce_does_not(api: LiveApi) -> None:
    emails = ["hard@example.com", "soft@example.com", "angry@example.com", "maybe@example.com"]
    plan, _ids, ses = await make_plan(api, emails)
    for doc in (
        ses_event("Bounce", ses["hard@example.com"], ["hard@example.com"], shape="notification"),
        ses_event("Bounce", ses["soft@example.com"], ["soft@example.com"], bounce_type="Transient"),
        ses_event("Bounce", ses["maybe@example.com"], ["maybe@example.com"], bounce_type="Undetermined"),
        ses_event("Complaint", ses["angry@example.com"], ["angry@example.com"]),
    ):
        resp = await api.post_sns(notification(api.ident, api.certs.cert_url, doc))
        assert resp.status == 200
    counts = await api.counts(plan)
    assert counts["bounced"] == 1 and counts["complained"] == 1
    suppressed = await api.scalar(
        "SELECT string_agg(email || ':' || reason, ',' ORDER BY email) FROM suppressions"
    )
    assert suppressed == "angry@example.com:complaint,hard@example.com:bounce"


async def test_fallback_mapping_by_message_tag(api: LiveApi) -> None:
    plan, ids, _ = await make_plan(api, ["tag@example.com"], send=False)
    doc = ses_event(
        "Delivery", "ses-id-not-yet-stored", ["tag@example.com"], message_ref=ids["tag@example.com"]
    )
    resp = await api.post_sns(notification(api.ident, api.certs.cert_url, doc))
    assert resp.status == 200
    assert (await api.counts(plan))["delivered"] == 1
    assert await api.scalar("SELECT message_id FROM events") == ids["tag@example.com"]


async def test_subscription_confirmation_and_unsubscribe_confirmation(api: LiveApi) -> None:
    confirm_url = f"{api.certs.prefix}confirm?Action=ConfirmSubscription&Token=abc"
    doc = confirmation(api.ident, api.certs.cert_url, confirm_url)
    resp = await api.post_sns(doc)
    assert resp.status == 200 and (await resp.json())["status"] == "confirmed"
    assert api.certs.subscribe_hits == ["abc"]
    # Unknown topic: refused, and SubscribeURL never fetched.
    resp = await api.post_sns(confirmation(api.ident, api.certs.cert_url, confirm_url, topic=OTHER_TOPIC))
    assert resp.status == 403
    # SubscribeURL outside the trusted hosts: refused before any request.
    resp = await api.post_sns(confirmation(api.ident, api.certs.cert_url, "https://evil.example/confirm"))
    assert resp.status == 403
    assert api.certs.subscribe_hits == ["abc"]
    resp = await api.post_sns(
        confirmation(api.ident, api.certs.cert_url, confirm_url, kind="UnsubscribeConfirmation")
    )
    assert resp.status == 200 and (await resp.json())["status"] == "acknowledged"
    assert api.certs.subscribe_hits == ["abc"]


async def test_production_settings_refuse_the_local_certificate(migrated: str, ident: Identity) -> None:
    live = await start_api(migrated, ident, sns_extra_trusted_cert_prefixes=[])
    try:
        doc = notification(ident, live.certs.cert_url, ses_event("Delivery", "x", ["a@example.com"]))
        resp = await live.post_sns(doc)
        assert resp.status == 403
        assert live.certs.cert_hits == 0
        assert await events_count(live) == 0
    finally:
        await stop_api(live)


async def test_authentic_non_ses_message_is_acknowledged_not_recorded(api: LiveApi) -> None:
    resp = await api.post_sns(notification(api.ident, api.certs.cert_url, "plain text, not SES"))
    assert resp.status == 200 and (await resp.json())["status"] == "ignored"
    assert await events_count(api) == 0


async def test_concurrent_replays_count_once(api: LiveApi) -> None:
    plan, _ids, ses = await make_plan(api, ["c@example.com"])
    doc = notification(
        api.ident, api.certs.cert_url, ses_event("Delivery", ses["c@example.com"], ["c@example.com"])
    )
    answers = await asyncio.gather(*(api.post_sns(doc) for _ in range(20)))
    assert all(a.status == 200 for a in answers)
    statuses = sorted([(await a.json())["status"] for a in answers])
    assert statuses.count("recorded") == 1
    assert (await api.counts(plan))["delivered"] == 1


async def test_slow_chunked_body_is_read_whole(api: LiveApi) -> None:
    plan, _ids, ses = await make_plan(api, ["slow@example.com"])
    doc = notification(
        api.ident, api.certs.cert_url, ses_event("Delivery", ses["slow@example.com"], ["slow@example.com"])
    )
    raw = json.dumps(doc).encode()

    async def trickle() -> Any:
        for i in range(0, len(raw), 200):
            yield raw[i : i + 200]
            await asyncio.sleep(0.005)

    resp = await api.client.post("/v1/events/result", data=trickle(), headers={"Content-Type": "text/plain"})
    assert resp.status == 200, await resp.text()
    assert (await api.counts(plan))["delivered"] == 1
    big = b'{"Type": "Notification", "Message": "' + b"x" * (300 * 1024) + b'"}'
    assert (await api.post_sns(big)).status == 413


async def test_database_restart_costs_a_retry_not_the_process(api: LiveApi, postgres: Any) -> None:
    plan, _ids, ses = await make_plan(api, ["r1@example.com", "r2@example.com"])

    def delivery(email: str) -> dict[str, Any]:
        return notification(api.ident, api.certs.cert_url, ses_event("Delivery", ses[email], [email]))

    assert (await api.post_sns(delivery("r1@example.com"))).status == 200
    await asyncio.to_thread(postgres.restart)
    doc = delivery("r2@example.com")
    statuses = []
    for _ in range(20):  # SNS retries what we answer 5xx; a broken pooled connection is replaced
        resp = await api.post_sns(doc)
        statuses.append(resp.status)
        if resp.status == 200:
            break
        assert resp.status == 503 and "message" in (await resp.json())["error"]
        await asyncio.sleep(0.25)
    assert statuses[-1] == 200, statuses
    assert (await api.counts(plan))["delivered"] == 2
    assert (await api.client.get("/readyz")).status == 200


async def test_ses_text_the_database_cannot_hold_is_recorded_without_it(api: LiveApi) -> None:
    """A remote mail server writes the bounce diagnostic; SES passes it on, NUL and all.

    PostgreSQL stores neither NUL nor a lone surrogate, in text or in jsonb. Such an event is
    recorded with each of those characters replaced by U+FFFD, and the events written in the
    same batch are recorded too (a failed batch would answer 503 to all of them, and SNS's
    retries of the poison event would fail every batch it lands in).
    """
    emails = ["ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com"]
    plan, _ids, ses = await make_plan(api, emails)
    bounce = ses_event("Bounce", ses["ann@example.com"], ["ann@example.com"])
    bounce["bounce"]["bounceSubType"] = "General\u0000"
    bounce["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550 no\u0000such \ud800user"
    complaint = ses_event("Complaint", ses["bob@example.com"], ["bob@example.com"])
    complaint["complaint"]["complaintFeedbackType"] = "abuse\udfff"
    complaint["mail"]["headers"] = [{"name": "Subject", "value": "\ud83d\ude00 ok \u0000"}]
    delivery = ses_event("Delivery", ses["cat@example.com"], ["cat@example.com"])
    docs = [notification(api.ident, api.certs.cert_url, doc) for doc in (bounce, complaint, delivery)]
    for _ in range(2):  # the second time each one is a replay
        answers = await asyncio.gather(*(api.post_sns(doc) for doc in docs))
        assert [a.status for a in answers] == [200, 200, 200], [await a.text() for a in answers]
    counts = await api.counts(plan)
    assert (counts["bounced"], counts["complained"], counts["delivered"]) == (1, 1, 1)
    assert await events_count(api) == 3
    suppressed = await api.scalar("SELECT string_agg(email, ',' ORDER BY email) FROM suppressions")
    assert suppressed == "ann@example.com,bob@example.com"
    stored = await api.scalar(
        "SELECT payload #>> '{bounce,bouncedRecipients,0,diagnosticCode}' FROM events"
        " WHERE event_type = 'bounce'"
    )
    assert stored == "smtp; 550 no\ufffdsuch \ufffduser"
    subtype = await api.scalar("SELECT subtype FROM events WHERE event_type = 'complaint'")
    assert subtype == "abuse\ufffd"
    subject = await api.scalar(
        "SELECT payload #>> '{mail,headers,0,value}' FROM events WHERE event_type = 'complaint'"
    )
    assert subject == "\U0001f600 ok \ufffd"  # a surrogate pair is one character, kept
    later = notification(
        api.ident, api.certs.cert_url, ses_event("Delivery", ses["dan@example.com"], ["dan@example.com"])
    )
    assert (await api.post_sns(later)).status == 200
    assert (await api.counts(plan))["delivered"] == 2


@pytest.mark.parametrize("field", ["Message", "Subject", "MessageId"])
async def test_an_envelope_field_that_is_not_unicode_text_is_refused_not_a_500(
    api: LiveApi, field: str
) -> None:
    """A lone surrogate escape in the envelope cannot be signed text: refused, nothing written."""
    plan, _ids, ses = await make_plan(api, ["eve@example.com"])
    doc = notification(
        api.ident,
        api.certs.cert_url,
        ses_event("Delivery", ses["eve@example.com"], ["eve@example.com"]),
        subject="s",
    )
    doc[field] = doc[field] + "\ud800"
    resp = await api.post_sns(json.dumps(doc))
    assert resp.status in (400, 403), await resp.text()
    assert "message" in (await resp.json())["error"]
    assert await events_count(api) == 0
    assert (await api.counts(plan))["delivered"] == 0

"""Plan administration as the operator uses it: register, upload (NDJSON/CSV), complete, suspend, stop, S3."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.api import HEADERS, PLAN, Identity, LiveApi, NullQueue, put, start_api, stop_api, upload

from emailplan.sender.api.state import STATE


@pytest.fixture
async def api(migrated: str, ident: Identity) -> AsyncIterator[LiveApi]:
    live = await start_api(migrated, ident, max_upload_bytes=2_000_000)
    live.client.server.app[STATE].queue = NullQueue()
    try:
        yield live
    finally:
        await stop_api(live)


async def test_register_is_idempotent_and_updates(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    first = await put(api, plan_id, PLAN)
    assert first.status == 201
    view = await first.json()
    assert view["state"] == "loading" and view["recipientsLoaded"] is False and view["ratePerSecond"] == 20
    again = await put(api, plan_id, {**PLAN, "ratePerSecond": 50, "suspended": True})
    assert again.status == 200
    view = await again.json()
    assert view["ratePerSecond"] == 50 and view["state"] == "suspended" and view["from"] == PLAN["from"]
    got = await api.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)
    assert (await got.json())["counts"]["total"] == 0
    assert (await api.client.get(f"/v1/plans/{uuid.uuid4()}", headers=HEADERS)).status == 404
    assert (await api.client.put(f"/v1/plans/{plan_id}", json=PLAN)).status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**PLAN, "subject": ""}, "subject"),
        ({**PLAN, "ratePerSecond": 0}, "ratePerSecond"),
        ({**PLAN, "ratePerSecond": "fast"}, "ratePerSecond"),
        ({**PLAN, "startAt": "tomorrow"}, "startAt"),
        ({k: v for k, v in PLAN.items() if k != "from"}, "from"),
        ({**PLAN, "html": None, "text": None}, None),
        ([1, 2], "body"),
    ],
)
async def test_bad_plans_are_refused_with_the_field(api: LiveApi, body: Any, field: str | None) -> None:
    plan_id = uuid.uuid4()
    resp = await put(api, plan_id, body)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err.get("field") == field and err["message"]
    assert (await api.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).status == 404
    resp = await api.client.put(f"/v1/plans/{plan_id}", data=b"{not json", headers=HEADERS)
    assert resp.status == 400


async def test_ndjson_upload_reports_rows_and_is_idempotent(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    lines = [
        json.dumps({"email": "ann@example.com", "name": "Ann", "vars": {"city": "Oslo"}}),
        json.dumps({"email": "not-an-address"}),
        "",
        "{broken",
        json.dumps({"email": "ANN@example.com"}),
        json.dumps({"email": "bob@example.com"}),
    ]
    body = ("\n".join(lines) + "\n").encode()
    resp = await upload(api, plan_id, body, "application/x-ndjson")
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["accepted"] == 2 and result["rejected"] == 2 and result["duplicates"] == 1
    assert sorted((e["row"], e["field"]) for e in result["errors"]) == [(2, "email"), (4, ""), (5, "email")]
    again = await (await upload(api, plan_id, body, "application/x-ndjson")).json()
    assert again["accepted"] == 0 and again["duplicates"] == 3
    assert (await api.counts(plan_id))["total"] == 2


async def test_csv_upload_streams_large_bodies_with_quoted_newlines(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    n = 20_000

    async def body() -> AsyncIterator[bytes]:
        yield b'email,name,note\r\n"first@example.com","First","line one\nline two"\r\n'
        for start in range(0, n, 1000):
            yield "".join(f"user{i}@example.com,User {i},x\n" for i in range(start, start + 1000)).encode()
        yield b"bad-address,Bad,x\n"
        yield b"short@example.com\n"

    resp = await upload(api, plan_id, body(), "text/csv")
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["accepted"] == n + 1
    assert {(e["row"], e["field"]) for e in result["errors"]} == {(n + 2, "email"), (n + 3, "")}
    counts = await api.counts(plan_id)
    assert counts["total"] == n + 1 and counts["created"] == n + 1
    vars_note = await api.scalar("SELECT vars->>'note' FROM messages WHERE email = 'first@example.com'")
    assert vars_note == "line one\nline two"


async def test_upload_limits_and_types(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    big = b"".join(b'{"email": "u%d@example.com"}\n' % i for i in range(80_000))
    assert len(big) > 2_000_000
    resp = await upload(api, plan_id, big, "application/x-ndjson")
    assert resp.status == 413 and "message" in (await resp.json())["error"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    resp = await upload(api, plan_id, chunked(), "application/x-ndjson")
    assert resp.status == 413
    resp = await upload(api, plan_id, b"email\na@example.com\n", "application/xml")
    assert resp.status == 415
    resp = await upload(api, plan_id, b"name\nAnn\n", "text/csv")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "email"
    resp = await upload(api, uuid.uuid4(), b'{"email":"a@example.com"}\n', "application/x-ndjson")
    assert resp.status == 404


async def test_complete_suspend_resume_stop(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    await upload(
        api, plan_id, b'{"email":"a@example.com"}\n{"email":"b@example.com"}\n', "application/x-ndjson"
    )
    queue: NullQueue = api.client.server.app[STATE].queue
    for expected in (2, 0):  # idempotent: the second call enqueues nothing
        resp = await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
        assert resp.status == 200
        view = await resp.json()
        assert view["state"] == "ready" and view["recipientsLoaded"] is True and view["enqueued"] == expected
    assert sorted(len(b) for b in queue.enqueued) == [2]
    view = await (await api.client.post(f"/v1/plans/{plan_id}/suspend", headers=HEADERS)).json()
    assert view["state"] == "suspended"
    view = await (await api.client.post(f"/v1/plans/{plan_id}/resume", headers=HEADERS)).json()
    assert view["state"] == "ready"
    view = await (await api.client.post(f"/v1/plans/{plan_id}/stop", headers=HEADERS)).json()
    assert view["state"] == "stopped" and view["counts"]["stopped"] == 2 and view["counts"]["created"] == 0
    resp = await upload(api, plan_id, b'{"email":"c@example.com"}\n', "application/x-ndjson")
    assert resp.status == 409
    for action in ("suspend", "resume", "stop", "recipients/complete"):
        resp = await api.client.post(f"/v1/plans/{uuid.uuid4()}/{action}", headers=HEADERS)
        assert resp.status == 404, action


async def test_s3_load_runs_in_the_background(migrated: str, ident: Identity, aws: Any) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket="lists")
    rows = "".join(f'{{"email": "s3user{i}@example.com"}}\n' for i in range(3000))
    s3.put_object(Bucket="lists", Key="spring.jsonl", Body=rows.encode())
    live = await start_api(migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url)
    try:
        plan_id = uuid.uuid4()
        await put(live, plan_id, PLAN)
        resp = await live.client.post(
            f"/v1/plans/{plan_id}/recipients/s3",
            headers=HEADERS,
            json={"bucket": "lists", "key": "spring.jsonl", "format": "jsonl"},
        )
        assert resp.status == 202
        resp = await live.client.post(
            f"/v1/plans/{plan_id}/recipients/s3", headers=HEADERS, json={"bucket": "lists", "format": "xml"}
        )
        assert resp.status == 400
        for _ in range(300):  # loaded, completed, then enqueued to SQS (moto)
            if await live.scalar("SELECT count(*) FROM messages WHERE enqueued") == 3000:
                break
            await asyncio.sleep(0.1)
        view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
        assert view["recipientsLoaded"] and view["state"] == "ready" and view["counts"]["total"] == 3000
        assert await live.scalar("SELECT count(*) FROM messages WHERE enqueued") == 3000
    finally:
        await stop_api(live)


async def test_text_postgres_cannot_store_is_a_client_error(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    for body in ({**PLAN, "subject": "a\u0000b"}, {**PLAN, "ses": {"tags": {"k": "\ud800"}}}):
        resp = await api.client.put(
            f"/v1/plans/{plan_id}",
            data=json.dumps(body),
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["field"] in ("subject", "ses.tags.k")
    await put(api, plan_id, PLAN)
    body = b'{"email": "a@example.com", "vars": {"x": "\\u0000"}}\n'
    body += b'{"email": "b@example.com", "name": "\\udc00"}\n{"email": "c@example.com"}\n'
    result = await (await upload(api, plan_id, body, "application/x-ndjson")).json()
    assert result["accepted"] == 1
    assert sorted((e["row"], e["field"]) for e in result["errors"]) == [(1, "vars"), (2, "name")]
    result = await (await upload(api, plan_id, b"email,name\nd@example.com,nul\x00here\n", "text/csv")).json()
    assert result["accepted"] == 0 and result["errors"][0]["row"] == 1

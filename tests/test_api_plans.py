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
    assert sorted((e["row"], e["field"]) for e in result["rejectedRows"]) == [(2, "email"), (4, "")]
    assert [e["row"] for e in result["duplicateRows"]] == [5]
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
    assert {(e["row"], e["field"]) for e in result["rejectedRows"]} == {(n + 2, "email"), (n + 3, "")}
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


async def test_complete_then_suspend_and_resume_by_the_plan_then_stop(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    await upload(
        api, plan_id, b'{"email":"a@example.com"}\n{"email":"b@example.com"}\n', "application/x-ndjson"
    )
    queue: NullQueue = api.client.server.app[STATE].queue
    for _ in range(2):  # idempotent: the second call enqueues nothing
        resp = await api.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
        assert resp.status == 200
        view = await resp.json()
        assert view["state"] == "ready" and view["recipientsLoaded"] is True
    assert sorted(len(b) for b in queue.enqueued) == [2]
    # Suspension has one channel: the plan's own ``suspended`` field.
    view = await (await put(api, plan_id, {**PLAN, "suspended": True})).json()
    assert view["state"] == "suspended" and view["suspended"] is True
    view = await (await put(api, plan_id, PLAN)).json()
    assert view["state"] == "ready" and view["suspended"] is False
    for gone in ("suspend", "resume"):
        assert (await api.client.post(f"/v1/plans/{plan_id}/{gone}", headers=HEADERS)).status == 404
    view = await (await api.client.post(f"/v1/plans/{plan_id}/stop", headers=HEADERS)).json()
    assert view["state"] == "stopped" and view["counts"]["stopped"] == 2 and view["counts"]["created"] == 0
    resp = await upload(api, plan_id, b'{"email":"c@example.com"}\n', "application/x-ndjson")
    assert resp.status == 409
    for action in ("stop", "recipients/complete"):
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
    assert sorted((e["row"], e["field"]) for e in result["rejectedRows"]) == [(1, "vars"), (2, "name")]
    result = await (await upload(api, plan_id, b"email,name\nd@example.com,nul\x00here\n", "text/csv")).json()
    assert result["accepted"] == 0 and result["rejectedRows"][0]["row"] == 1


async def test_csv_header_quoted_or_capitalised_is_accepted(api: LiveApi) -> None:
    """Issue 9 #4: what the operator's reader accepts, the upload accepts too (one reader)."""
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    for header in ('"email","name"', "Email,Name", "\ufeffEMAIL,name"):
        body = f"{header}\r\nu{uuid.uuid4().hex[:6]}@example.com,Ann\r\n".encode()
        resp = await upload(api, plan_id, body, "text/csv")
        assert resp.status == 200, (header, await resp.text())
        assert (await resp.json())["accepted"] == 1


async def test_whole_list_upload_is_a_load_job_and_can_be_repeated(api: LiveApi) -> None:
    """The operator's upload (complete=true) replaces an unfinished list: a retry never double counts."""
    plan_id = uuid.uuid4()
    await put(api, plan_id, PLAN)
    body = b"email,name\na@example.com,A\nbad,B\na@example.com,A2\nc@example.com,C\n"
    url = f"/v1/plans/{plan_id}/recipients?complete=true"
    for _ in range(2):
        resp = await api.client.post(url, data=body, headers={**HEADERS, "Content-Type": "text/csv"})
        assert resp.status == 200, await resp.text()
    view = await (await api.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
    load = view["load"]
    assert view["recipientsLoaded"] is True and load["state"] == "loaded"
    assert (load["accepted"], load["rejected"], load["duplicates"]) == (2, 1, 1)
    assert [r["row"] for r in load["rejectedRows"]] == [2] and [r["row"] for r in load["duplicateRows"]] == [
        3
    ]
    assert view["counts"]["total"] == 2

    other = uuid.uuid4()
    await put(api, other, PLAN)
    url = f"/v1/plans/{other}/recipients?complete=true"
    resp = await api.client.post(
        url, data=b"mail,name\nx@y.org,A\n", headers={**HEADERS, "Content-Type": "text/csv"}
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "email"
    load = (await (await api.client.get(f"/v1/plans/{other}", headers=HEADERS)).json())["load"]
    assert load["state"] == "failed" and load["failure"]["reason"] == "NotAList"
    assert "email column" in load["failure"]["message"]


async def test_s3_load_job_reports_missing_object_and_recovers(
    migrated: str, ident: Identity, aws: Any
) -> None:
    """Issue 9 #2: a failed S3 load is a failed job with a reason, and loading again succeeds."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket="late")
    live = await start_api(migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url)
    try:
        plan_id = uuid.uuid4()
        await put(live, plan_id, PLAN)
        source = {"bucket": "late", "key": "a.csv", "format": "csv"}
        url = f"/v1/plans/{plan_id}/recipients/s3"
        assert (await live.client.post(url, headers=HEADERS, json=source)).status == 202
        load = await _wait_load(live, plan_id, {"failed"})
        assert load["failure"]["reason"] == "ObjectMissing" and "a.csv" in load["failure"]["message"]
        assert load["failure"]["permanent"] is True  # issue 20 #3: the operator will not retry alone
        s3.put_object(Bucket="late", Key="a.csv", Body=b"email\nx@example.com\nnope\n")
        assert (await live.client.post(url, headers=HEADERS, json=source)).status == 202
        load = await _wait_load(live, plan_id, {"loaded"})
        assert (load["accepted"], load["rejected"]) == (1, 1) and load["failure"] is None
        assert [(r["row"], r["field"]) for r in load["rejectedRows"]] == [(2, "email")]
        s3.put_object(Bucket="late", Key="b.csv", Body=b"\x89PNG\r\n\x1a\n\x00\x00")
        other = uuid.uuid4()
        await put(live, other, PLAN)
        await live.client.post(
            f"/v1/plans/{other}/recipients/s3", headers=HEADERS, json={**source, "key": "b.csv"}
        )
        load = await _wait_load(live, other, {"failed"})
        assert load["failure"]["reason"] == "NotAList" and load["failure"]["permanent"] is True
        for body in (b"", b"email\n"):  # issue 20 #3: an empty list is a failure, not a finished plan
            s3.put_object(Bucket="late", Key="empty.csv", Body=body)
            empty = uuid.uuid4()
            await put(live, empty, PLAN)
            await live.client.post(
                f"/v1/plans/{empty}/recipients/s3", headers=HEADERS, json={**source, "key": "empty.csv"}
            )
            load = await _wait_load(live, empty, {"failed", "loaded"})
            assert load["state"] == "failed" and load["failure"]["reason"] == "EmptyList", load
            assert load["failure"]["permanent"] is True
    finally:
        await stop_api(live)


async def _wait_load(live: LiveApi, plan_id: uuid.UUID, states: set[str]) -> dict[str, Any]:
    load: dict[str, Any] = {}
    for _ in range(300):
        view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
        load = view.get("load") or {}
        if load.get("state") in states:
            return load
        await asyncio.sleep(0.1)
    raise AssertionError(f"load job never reached {states}: {load}")


async def test_s3_load_cut_by_an_api_restart_is_loaded_again_without_double_counting(
    migrated: str, ident: Identity, aws: Any
) -> None:
    """A job left ``loading`` by a dead API (no heartbeat) starts again from the beginning."""
    import boto3
    from sqlalchemy import text

    from emailplan.contract.plans import LoadJob, LoadSourceKind, LoadState, S3Source
    from emailplan.sender.store import loading

    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket="cut")
    s3.put_object(
        Bucket="cut",
        Key="l.csv",
        Body=("email\n" + "".join(f"c{i}@example.com\n" for i in range(500))).encode(),
    )
    live = await start_api(migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url)
    try:
        plan_id = uuid.uuid4()
        await put(live, plan_id, PLAN)
        source = S3Source(bucket="cut", key="l.csv", format="csv")
        # What the previous API process left: half the rows stored, the job "loading", its heartbeat old.
        half = [(i + 1, {"email": f"c{i}@example.com"}) for i in range(250)]
        await loading.insert_recipients(live.engine, plan_id, half)
        await loading.save_load(
            live.engine,
            plan_id,
            LoadJob(state=LoadState.LOADING, source=LoadSourceKind.S3, s3=source, attempts=1),
        )
        url = f"/v1/plans/{plan_id}/recipients/s3"
        body = source.model_dump(mode="json")
        job = await (await live.client.post(url, headers=HEADERS, json=body)).json()
        assert job["state"] == "loading" and job["attempts"] == 1  # a live heartbeat: left alone
        async with live.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE recipient_loads SET updated_at = now() - interval '5 minutes' WHERE plan_id = :p"
                ),
                {"p": plan_id},
            )
        assert (await live.client.post(url, headers=HEADERS, json=body)).status == 202
        load = await _wait_load(live, plan_id, {"loaded"})
        assert (load["accepted"], load["duplicates"], load["attempts"]) == (500, 0, 2)
        counts = await live.counts(plan_id)
        assert counts["total"] == 500 and counts["created"] == 500
    finally:
        await stop_api(live)


def _crd_ses_rules() -> dict[str, str]:
    """The patterns admission (the generated CRD) applies to ``spec.ses``: tag names, values, the set."""
    import re
    from pathlib import Path

    import yaml

    crd = yaml.safe_load((Path(__file__).parents[1] / "crds" / "emailplan.yaml").read_text())
    ses = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["ses"]
    tags = ses["properties"]["tags"]
    name_rule = tags["x-kubernetes-validations"][0]["rule"]
    found = re.search(r"matches\(r?'([^']*)'\)", name_rule)
    assert found, name_rule
    return {
        "name": found.group(1),
        "value": tags["additionalProperties"]["pattern"],
        "configurationSet": ses["properties"]["configurationSet"]["pattern"],
    }


SES_SAMPLES = ["ok", "a b", "", "a.b", "a@b", "x" * 256, "x" * 257, "ü", "under_score-dash", "tab\t"]


@pytest.mark.parametrize("sample", SES_SAMPLES)
async def test_ses_fields_accept_exactly_what_admission_accepts(api: LiveApi, sample: str) -> None:
    """Issue 20 #4: one rule: the plan API refuses a tag or configuration set iff the CRD does."""
    import re

    rules = _crd_ses_rules()
    cases = [
        ("name", {"tags": {sample: "v"}}),
        ("value", {"tags": {"k": sample}}),
        ("configurationSet", {"configurationSet": sample}),
    ]
    for what, ses in cases:
        admitted = re.fullmatch(rules[what].removeprefix("^").removesuffix("$"), sample) is not None
        resp = await put(api, uuid.uuid4(), {**PLAN, "ses": ses})
        body = await resp.json()
        assert (resp.status < 300) == admitted, (what, sample, resp.status, body)
        if not admitted:
            assert resp.status == 400 and body["error"]["field"].startswith("ses."), body


async def test_unknown_admin_paths_are_404_with_or_without_a_key(api: LiveApi) -> None:
    """Issue 20 #5: a path that does not exist says so (JSON 404); known ones still want the key."""
    plan_id = uuid.uuid4()
    for headers in ({}, HEADERS, {"x-api-key": "wrong"}):
        for path in ("/v1/nope", f"/v1/plans/{plan_id}/nope", "/v1/"):
            resp = await api.client.get(path, headers=headers)
            assert resp.status == 404, (path, headers, resp.status)
            assert (await resp.json())["error"]["message"]
    resp = await api.client.get(f"/v1/plans/{plan_id}")
    assert resp.status == 401 and (await resp.json())["error"]["field"] == "x-api-key"
    assert (await api.client.put(f"/v1/plans/{plan_id}", json=PLAN)).status == 401

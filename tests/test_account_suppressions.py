"""The SES account-level suppression list is honoured at load: those addresses are never mailed.

Real PostgreSQL, SQS and SES sends in moto, real ``emailplan worker`` processes; the list
(SES v2 ``ListSuppressedDestinations``, which moto does not answer) comes from the local
stub that speaks its wire format and pages it as SES does, read through the real
aiobotocore client by the API while it loads a list.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from support.api import HEADERS, PLAN, Identity, LiveApi, put, start_api, stop_api
from support.worker import Workers, addressee, emails, received, wait_exit, worker_env

from devenv.moto import MotoServer
from devenv.sesaccount import AccountStub

ACCOUNT_REASON = "Suppressed: account list ({})"


@pytest.fixture
async def stub() -> AsyncIterator[AccountStub]:
    async with AccountStub() as s:
        yield s


@pytest.fixture
async def live(migrated: str, ident: Identity, aws: MotoServer, stub: AccountStub) -> AsyncIterator[LiveApi]:
    api = await start_api(
        migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url, ses_account_endpoint_url=stub.url
    )
    try:
        yield api
    finally:
        await stop_api(api)


def account_list(bounced: list[str], complained: list[str], others: int) -> list[dict[str, Any]]:
    """The account's list: many strangers (so it spans pages) with our recipients among them."""
    rows = [{"EmailAddress": f"stranger{i}@elsewhere.example", "Reason": "BOUNCE"} for i in range(others)]
    rows[others // 2 : others // 2] = [{"EmailAddress": e, "Reason": "BOUNCE"} for e in bounced]
    rows += [{"EmailAddress": e, "Reason": "COMPLAINT"} for e in complained]
    return rows


async def upload_whole(live: LiveApi, plan_id: uuid.UUID, addresses: list[str]) -> Any:
    body = "email,name\n" + "".join(f"{e},N\n" for e in addresses)
    return await live.client.post(
        f"/v1/plans/{plan_id}/recipients?complete=true",
        data=body.encode(),
        headers={**HEADERS, "Content-Type": "text/csv"},
    )


async def failures(live: LiveApi, plan_id: uuid.UUID) -> dict[str, str]:
    resp = await live.client.get(f"/v1/plans/{plan_id}/failures?limit=1000", headers=HEADERS)
    assert resp.status == 200, await resp.text()
    return {item["email"]: item["reason"] for item in (await resp.json())["items"]}


async def test_addresses_on_the_account_list_are_counted_suppressed_and_never_mailed(
    live: LiveApi, stub: AccountStub, aws: MotoServer, ses_identity: None, workers: Workers, migrated: str
) -> None:
    recipients = emails(20, prefix="acct")
    bounced, complained = recipients[3:6], recipients[10:12]
    # SES keeps the address as it was sent to: the list's spelling need not match the ledger's.
    stub.suppressed = account_list([b.upper() for b in bounced], complained, others=2300)
    plan_id = uuid.uuid4()
    assert (await put(live, plan_id, PLAN)).status == 201

    resp = await upload_whole(live, plan_id, recipients)
    assert resp.status == 200, await resp.text()
    job = await resp.json()
    assert job["state"] == "loaded" and job["accepted"] == 15 and job["suppressed"] == 5
    assert stub.list_calls == 3, "the whole list is read, page after page"
    assert await failures(live, plan_id) == {
        **{e: ACCOUNT_REASON.format("BOUNCE") for e in bounced},
        **{e: ACCOUNT_REASON.format("COMPLAINT") for e in complained},
    }
    assert (await live.counts(plan_id))["suppressed"] == 5

    await wait_exit([workers.start(worker_env(migrated, plan_id))], workers, 60)
    sent = sorted(addressee(m) for m in received(aws))
    assert sent == sorted(set(recipients) - set(bounced) - set(complained))


async def test_an_unreadable_account_list_fails_the_load_until_it_can_be_read(
    live: LiveApi, stub: AccountStub
) -> None:
    recipients = emails(6, prefix="later")
    stub.suppressed = account_list(recipients[:2], [], others=10)
    stub.list_failure = 500
    plan_id = uuid.uuid4()
    assert (await put(live, plan_id, PLAN)).status == 201

    resp = await upload_whole(live, plan_id, recipients)
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"]["dependency"] == "ses"
    view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
    assert not view["recipientsLoaded"] and view["counts"]["total"] == 0
    load = view["load"]
    assert load["state"] == "failed" and load["failure"]["reason"] == "SuppressionListUnavailable"
    assert load["failure"]["permanent"] is False  # the operator tries again with backoff
    assert "suppression list" in load["failure"]["message"]

    stub.list_failure = None
    resp = await upload_whole(live, plan_id, recipients)
    assert resp.status == 200 and (await resp.json())["suppressed"] == 2


async def test_s3_load_honours_the_account_list_and_retries_when_it_cannot_be_read(
    live: LiveApi, stub: AccountStub, aws: MotoServer
) -> None:
    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket="acctlists")
    recipients = emails(30, prefix="s3acct")
    s3.put_object(Bucket="acctlists", Key="l.csv", Body=("email\n" + "\n".join(recipients)).encode())
    stub.suppressed = account_list([], recipients[:4], others=1500)
    stub.list_failure = 503
    plan_id = uuid.uuid4()
    assert (await put(live, plan_id, PLAN)).status == 201
    source = {"bucket": "acctlists", "key": "l.csv", "format": "csv"}

    async def settled() -> dict[str, Any]:
        """Start (or retry) the load and wait for its outcome in the plan view."""
        resp = await live.client.post(f"/v1/plans/{plan_id}/recipients/s3", headers=HEADERS, json=source)
        assert resp.status == 202, await resp.text()
        while True:
            view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
            job: dict[str, Any] = view["load"]
            if job["state"] in ("loaded", "failed"):
                return job
            await asyncio.sleep(0.1)

    job = await settled()
    assert job["state"] == "failed" and job["failure"]["reason"] == "SuppressionListUnavailable"
    assert await live.scalar("SELECT count(*) FROM messages WHERE plan_id = :p", p=plan_id) == 0
    stub.list_failure = None
    job = await settled()
    assert job["state"] == "loaded" and job["suppressed"] == 4 and job["accepted"] == 26
    assert set((await failures(live, plan_id)).values()) == {ACCOUNT_REASON.format("COMPLAINT")}

"""Helpers for the API tests: the API in-process on loopback against a real database.

SNS signing (the test identity, its certificate server, signed notifications and SES
events) lives in ``devenv.sns``, shared with the e2e tests, the benchmarks and the demo;
it is re-exported here for the tests' convenience. No tests live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from devenv.sns import (
    OTHER_TOPIC,
    TOPIC,
    CertServer,
    Identity,
    confirmation,
    make_identity,
    notification,
    ses_event,
    sign,
)

__all__ = [
    "API_KEY",
    "HEADERS",
    "OTHER_TOPIC",
    "PLAN",
    "TOKEN_KEY",
    "TOPIC",
    "CertServer",
    "Identity",
    "LiveApi",
    "NullQueue",
    "confirmation",
    "make_identity",
    "make_plan",
    "notification",
    "put",
    "ses_event",
    "sign",
    "start_api",
    "stop_api",
    "upload",
]

API_KEY = "test-api-key-0123456789"
TOKEN_KEY = "test-token-key-0123456789"
HEADERS = {"x-api-key": API_KEY}


class NullQueue:
    """A work queue that accepts everything (the ledger's QueueSink) for tests without SQS."""

    def __init__(self) -> None:
        self.enqueued: list[list[int]] = []

    async def enqueue(self, plan_id: uuid.UUID, batches: Any) -> None:
        self.enqueued.extend(list(b) for b in batches)

    async def purge(self, plan_id: uuid.UUID) -> None:
        return None


@dataclass
class LiveApi:
    """A real API server on loopback with a real database, plus what tests need around it."""

    client: Any  # aiohttp.test_utils.TestClient
    settings: Any
    engine: Any
    certs: CertServer
    ident: Identity
    account_stub: Any = None  # the SES account stub this helper started (with_aws and no endpoint given)

    def token(self, purpose: str, message_id: int, extra: str = "") -> str:
        from emailplan.sender.tokens import make_token

        return make_token(TOKEN_KEY.encode(), purpose, message_id, extra)

    async def post_sns(self, doc: dict[str, Any] | bytes | str, **headers: str) -> Any:
        body = doc if isinstance(doc, bytes | str) else json.dumps(doc)
        return await self.client.post(
            "/v1/events/result", data=body, headers={"Content-Type": "text/plain; charset=UTF-8", **headers}
        )

    async def counts(self, plan_id: uuid.UUID) -> dict[str, int]:
        resp = await self.client.get(f"/v1/results/count/{plan_id}", headers=HEADERS)
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    async def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()


async def start_api(database_url: str, ident: Identity, **overrides: Any) -> LiveApi:
    from aiohttp.test_utils import TestClient, TestServer

    from emailplan.sender.api.app import create_app
    from emailplan.sender.db import make_engine
    from emailplan.sender.settings import SenderSettings

    with_aws = bool(overrides.pop("with_aws", False))
    stub = None
    if with_aws and "ses_account_endpoint_url" not in overrides:
        # moto answers neither GetAccount nor ListSuppressedDestinations: as in the dev stack, the
        # stub does (an account without quota and an empty suppression list).
        from devenv.sesaccount import UNLIMITED_ACCOUNT, AccountStub

        stub = await AccountStub(UNLIMITED_ACCOUNT).__aenter__()
        overrides["ses_account_endpoint_url"] = stub.url
    certs = CertServer(ident).start()
    values: dict[str, Any] = {
        "database_url": database_url,
        "token_key": TOKEN_KEY,
        "api_key": API_KEY,
        "sns_topic_arns": [TOPIC],
        "sns_extra_trusted_cert_prefixes": [certs.prefix],
        "sns_ca_file": ident.cert_file,
        "open_flush_seconds": 0.2,
        "db_pool_size": 5,
        **overrides,
    }
    settings = SenderSettings(**values)
    engine = make_engine(settings)
    app = create_app(settings, engine=engine, with_aws=with_aws)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return LiveApi(
        client=client, settings=settings, engine=engine, certs=certs, ident=ident, account_stub=stub
    )


# An in-process API's shutdown once hung until pytest-timeout (600 s), whose dump shows threads,
# not the coroutines that were waiting. Stopping now fails sooner and names every task's stack.
STOP_SECONDS = 120


async def stop_api(api: LiveApi) -> None:
    try:
        await asyncio.wait_for(api.client.close(), STOP_SECONDS)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        raise AssertionError(
            f"the API did not stop within {STOP_SECONDS} s; its tasks:\n{stacks.getvalue()}"
        ) from None
    await api.engine.dispose()
    api.certs.stop()
    if api.account_stub is not None:
        await api.account_stub.__aexit__()


async def make_plan(
    api: LiveApi, emails: list[str], *, send: bool = True, sent_ago_seconds: float = 3600.0
) -> tuple[uuid.UUID, dict[str, int], dict[str, str]]:
    """A plan with recipients through the ledger; when ``send``, every message is recorded as sent.

    Returns (plan id, {email: message id}, {email: SES message id}).
    """
    from sqlalchemy import text

    from emailplan.sender.store import claims, loading, plans, sendresults
    from emailplan.sender.store.sendresults import SendResult

    plan_id = uuid.uuid4()
    await plans.upsert_plan(
        api.engine,
        plan_id,
        name="p",
        namespace="ns",
        spec={"from": "a@example.com", "subject": "s", "text": "t"},
    )
    rows = [(i + 1, {"email": e}) for i, e in enumerate(emails)]
    result = await loading.insert_recipients(api.engine, plan_id, rows)
    assert result.accepted == len(emails), result
    async with api.engine.connect() as conn:
        ids = {
            r[1]: int(r[0])
            for r in (
                await conn.execute(text("SELECT id, email FROM messages WHERE plan_id = :p"), {"p": plan_id})
            ).all()
        }
    ses_ids: dict[str, str] = {}
    if send:
        await loading.complete_recipients(api.engine, plan_id, NullQueue())
        claimed = await claims.claim(api.engine, plan_id, list(ids.values()), "test", 60)
        assert len(claimed) == len(ids)
        ses_ids = {e: f"ses-{uuid.uuid4().hex}" for e in ids}
        await sendresults.record_results(
            api.engine,
            plan_id,
            [SendResult(id=mid, status="sent", ses_message_id=ses_ids[e]) for e, mid in ids.items()],
        )
        async with api.engine.begin() as conn:
            await conn.execute(
                text("UPDATE messages SET sent_at = now() - make_interval(secs => :s) WHERE plan_id = :p"),
                {"s": sent_ago_seconds, "p": plan_id},
            )
    return plan_id, ids, ses_ids


# --------------------------------------------------------------------------- plan administration

# A plan as the operator registers it (PUT /v1/plans/{planId}).
PLAN = {
    "name": "spring",
    "namespace": "mail",
    "from": "News <news@example.com>",
    "replyTo": [],
    "subject": "Hello {{ name }}",
    "html": "<p>Hi {{ name }}</p>",
    "text": None,
    "ratePerSecond": 20,
    "startAt": None,
    "suspended": False,
    "tracking": {"opens": True, "clicks": True},
    "unsubscribe": {"enabled": True},
    "ses": {"configurationSet": None, "tags": {}},
}


async def put(api: LiveApi, plan_id: uuid.UUID, body: Any) -> Any:
    return await api.client.put(f"/v1/plans/{plan_id}", json=body, headers=HEADERS)


async def upload(api: LiveApi, plan_id: uuid.UUID, body: bytes | Any, ctype: str) -> Any:
    return await api.client.post(
        f"/v1/plans/{plan_id}/recipients", data=body, headers={**HEADERS, "Content-Type": ctype}
    )


@contextlib.asynccontextmanager
async def api_without_sqs(database_url: str, ident: Identity) -> AsyncIterator[LiveApi]:
    """A live API whose work queue is a :class:`NullQueue` (what was queued is kept to assert on)."""
    from emailplan.sender.api.state import STATE

    live = await start_api(database_url, ident)
    live.client.server.app[STATE].queue = NullQueue()
    try:
        yield live
    finally:
        await stop_api(live)

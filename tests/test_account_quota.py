"""End to end: the SES account's 24-hour quota and standing hold every plan back, and let go by themselves.

Real ``emailplan worker`` processes, real PostgreSQL, SQS and SES sends in moto; the
account (SES v2 ``GetAccount``, which moto does not answer) from the local stub that
speaks its wire format, read through the real aiobotocore client. The quota window is
shortened (development mode only) so the oldest sends age out within the test.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.api import HEADERS, PLAN, Identity, put, start_api, stop_api
from support.worker import Workers, addressee, emails, make_plan, received, wait_exit, worker_env

from devenv.moto import MotoServer
from devenv.sesaccount import AccountStub
from emailplan.sender.store import plans, quota

WINDOW = 8  # seconds: the test's "24 hours"


@pytest.fixture
async def stub() -> AsyncIterator[AccountStub]:
    async with AccountStub() as s:
        yield s


def account_env(migrated: str, plan: object, stub: AccountStub) -> dict[str, str]:
    return worker_env(
        migrated,
        plan,  # type: ignore[arg-type]
        EMAILPLAN_DEV_MODE="true",
        EMAILPLAN_SES_ACCOUNT_ENDPOINT_URL=stub.url,
        EMAILPLAN_ACCOUNT_POLL_SECONDS="1",
        EMAILPLAN_QUOTA_WINDOW_SECONDS=str(WINDOW),
    )


async def busiest_window(engine: AsyncEngine) -> int:
    """The most sends (all plans) SES saw in any one quota window, ending at some send."""
    async with engine.connect() as conn:
        busiest = await conn.scalar(
            text(
                "SELECT max(n) FROM (SELECT (SELECT count(*) FROM messages o WHERE o.sent_at > m.sent_at"
                " - make_interval(secs => :w) AND o.sent_at <= m.sent_at) AS n FROM messages m"
                " WHERE m.sent_at IS NOT NULL) AS w"
            ),
            {"w": WINDOW},
        )
    return int(busiest or 0)


def each_once(aws: MotoServer, *lists: list[str]) -> None:
    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == {e for addresses in lists for e in addresses}
    assert max(to.values()) == 1, "a recipient was lost or got two emails"


async def test_two_plans_together_stay_under_the_24_hour_quota_and_the_second_finishes_later(
    engine: AsyncEngine,
    migrated: str,
    aws: MotoServer,
    ses_identity: None,
    workers: Workers,
    stub: AccountStub,
) -> None:
    quota, per_plan = 30, 20
    stub.account["SendQuota"] = {"Max24HourSend": float(quota), "MaxSendRate": 100.0, "SentLast24Hours": 0.0}
    first = await make_plan(engine, emails(per_plan, prefix="a"), rate=50)
    await wait_exit([workers.start(account_env(migrated, first, stub))], workers, 60)
    second = await make_plan(engine, emails(per_plan, prefix="b"), rate=50)
    await wait_exit([workers.start(account_env(migrated, second, stub))], workers, 120)

    each_once(aws, emails(per_plan, prefix="a"), emails(per_plan, prefix="b"))
    busiest = await busiest_window(engine)
    assert busiest <= quota, f"{busiest} sends within one window, quota {quota}"
    counts = await plans.get_counts(engine, second)
    assert counts is not None and counts["sent"] == per_plan


async def test_plans_sending_at_the_same_moment_share_the_quota_without_passing_it(
    engine: AsyncEngine,
    migrated: str,
    aws: MotoServer,
    ses_identity: None,
    workers: Workers,
    stub: AccountStub,
) -> None:
    """Three pods of two processes each start together: each process reads the same quota
    left, and only a reservation they all share keeps their sum under it."""
    quota, per_plan, pods = 30, 20, 3
    stub.account["SendQuota"] = {"Max24HourSend": float(quota), "MaxSendRate": 100.0, "SentLast24Hours": 0.0}
    lists = [emails(per_plan, prefix=f"p{k}-") for k in range(pods)]
    ids = [await make_plan(engine, addresses, rate=100) for addresses in lists]
    two = {"EMAILPLAN_WORKER_PROCESSES": "2"}
    procs = [workers.start({**account_env(migrated, plan, stub), **two}) for plan in ids]
    await wait_exit(procs, workers, 180)

    each_once(aws, *lists)
    busiest = await busiest_window(engine)
    assert busiest <= quota, f"{busiest} sends within one window, quota {quota}"


async def test_permits_reserved_but_not_sent_hold_the_quota_and_say_when_it_frees(
    engine: AsyncEngine, migrated: str
) -> None:
    """Grants count against the quota from the moment they are taken, sent or not: the account
    view shows the quota used up (so the plan says ``QuotaExhausted``) and when it frees."""
    window = {"window_seconds": WINDOW, "slack_seconds": 1.0}
    assert await quota.reserve(engine, 25, limit=30, floor=0, **window) == 25
    assert await quota.reserve(engine, 10, limit=30, floor=0, **window) == 5, "cut to what is left"
    assert await quota.reserve(engine, 1, limit=30, floor=0, **window) == 0
    usage = await quota.window_usage(engine, WINDOW, 30, slack_seconds=1.0)
    assert usage.sent == 30, "nothing sent yet, but every permit is spoken for"
    assert usage.frees_at is not None and usage.now < usage.frees_at <= usage.now + timedelta(
        seconds=WINDOW + 2
    )
    assert await quota.reserve(engine, 5, limit=40, floor=0, **window) == 5, "a larger quota leaves more"


@pytest.mark.parametrize("standing", ["PROBATION", "SHUTDOWN"])
async def test_an_account_under_review_sends_nothing_until_ses_says_healthy(
    engine: AsyncEngine,
    migrated: str,
    aws: MotoServer,
    ses_identity: None,
    workers: Workers,
    stub: AccountStub,
    standing: str,
) -> None:
    stub.account["EnforcementStatus"] = standing
    plan = await make_plan(engine, emails(10), rate=50)
    proc = workers.start(account_env(migrated, plan, stub))
    # The worker has read the account before sending and again since (it polls every second).
    while stub.calls < 3:
        assert proc.poll() is None, workers.logs()
        await asyncio.sleep(0.1)
    counts = await plans.get_counts(engine, plan)
    assert counts is not None and counts["sent"] == 0 and received(aws) == []
    stub.account["EnforcementStatus"] = "HEALTHY"
    await wait_exit([proc], workers, 60)
    assert len(received(aws)) == 10


async def test_plan_view_reports_the_account_for_the_operator(
    migrated: str, ident: Identity, aws: MotoServer, stub: AccountStub
) -> None:
    stub.account["SendQuota"] = {"Max24HourSend": 50.0, "MaxSendRate": 14.0, "SentLast24Hours": 50.0}
    stub.account["EnforcementStatus"] = "PROBATION"
    live = await start_api(
        migrated, ident, with_aws=True, aws_endpoint_url=aws.endpoint_url, ses_account_endpoint_url=stub.url
    )
    try:
        plan_id = uuid.uuid4()
        assert (await put(live, plan_id, PLAN)).status == 201
        view: dict[str, Any] = {}
        while not view.get("account"):
            view = await (await live.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)).json()
            await asyncio.sleep(0.1)
        account = view["account"]
        assert account["enforcementStatus"] == "PROBATION" and account["quotaLeft"] == 0
        assert account["max24HourSend"] == 50 and account["sentInWindow"] == 50 and account["resumesAt"]
    finally:
        await stop_api(live)

"""End to end: real ``emailplan worker`` processes, real PostgreSQL, SQS and SES in moto.

What a campaign owner would notice is asserted on what SES received (moto's
store of raw messages): every valid recipient exactly once, with the right
headers and bodies; nobody suppressed or invalid; the plan's rate held across
pods; nothing lost when a pod is killed, SES throttles or PostgreSQL restarts.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.worker import (
    PUBLIC,
    TOKEN_KEY,
    Workers,
    addressee,
    emails,
    make_plan,
    raw_sent,
    received,
    wait_counts,
    wait_exit,
    worker_env,
)

from devenv.moto import MotoServer
from devenv.postgres import PostgresServer
from devenv.suspend import set_suspended
from emailplan.contract.plans import IDS_PER_QUEUE_MESSAGE
from emailplan.sender.db import make_engine
from emailplan.sender.migrate import upgrade_to
from emailplan.sender.store import plans
from emailplan.sender.tokens import read_token


async def test_every_valid_recipient_gets_exactly_one_rendered_email(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    good = emails(40)
    plan_id = await make_plan(
        engine,
        [*good, "not-an-address", "blocked@example.com", good[0].upper()],
        rate=200,
        suppressed=("blocked@example.com",),
    )
    await wait_exit([workers.start(worker_env(migrated, plan_id))], workers, 90)

    msgs = received(aws)
    to = collections.Counter(addressee(m) for m in msgs)
    assert set(to) == set(good) and max(to.values()) == 1
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert (counts["sent"], counts["suppressed"], counts["created"], counts["processing"]) == (40, 1, 0, 0)
    plan = await plans.get_plan(engine, plan_id)
    assert plan is not None and plan.state == "done"

    async with engine.connect() as conn:
        rows = {
            r.email: r
            for r in await conn.execute(text("SELECT id, email, ses_message_id, row_no FROM messages"))
        }
    for msg in msgs:
        row = rows[addressee(msg)]
        assert msg["X-EmailPlan-Message-Id"] == str(row.id)
        assert msg["Subject"] == f"Hello N{row.row_no}"
        assert msg["From"] == "News <news@example.com>"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsub = msg["List-Unsubscribe"][1:-1]
        assert unsub.startswith(f"{PUBLIC}/v1/unsubscribe?t=")
        assert read_token(TOKEN_KEY.encode(), "unsub", unsub.split("t=")[1]) == row.id
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert f"your code is C{row.row_no}" in html and f"your code is C{row.row_no}" in plain
        assert "/v1/events/open?requestId=" in html and "/v1/events/click?t=" in html
        assert row.ses_message_id  # the SES id is stored for event mapping
    assert len({r.ses_message_id for r in rows.values() if r.ses_message_id}) == 40


async def test_rejected_sender_fails_messages_with_reason(
    engine: AsyncEngine, migrated: str, aws: MotoServer, workers: Workers
) -> None:
    # No verified identity: SES answers MessageRejected, a permanent error.
    plan_id = await make_plan(engine, emails(5), rate=100)
    await wait_exit([workers.start(worker_env(migrated, plan_id))], workers, 60)
    assert received(aws) == []
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["failed"], counts["sent"]) == (5, 0)
    async with engine.connect() as conn:
        errors = set((await conn.execute(text("SELECT error FROM messages"))).scalars())
    assert len(errors) == 1 and "MessageRejected" in str(next(iter(errors)))


@pytest.mark.parametrize("n_workers", [2, 4])
async def test_many_workers_share_the_plan_rate_without_duplicates(
    n_workers: int, engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n, rate = 120, 30.0
    plan_id = await make_plan(engine, emails(n), rate=rate)
    procs = [workers.start(worker_env(migrated, plan_id)) for _ in range(n_workers)]
    await wait_exit(procs, workers, 120)

    to = collections.Counter(addressee(m) for m in received(aws))
    assert len(to) == n and max(to.values()) == 1, "a recipient got more than one email"
    async with engine.connect() as conn:
        first, last = (await conn.execute(text("SELECT min(sent_at), max(sent_at) FROM messages"))).one()
    # The shared bucket starts empty and allows a burst of rate/2: n sends take at least (n - burst) / rate.
    # Loose lower bound only (CI machines are slow, never fast by accident).
    assert (last - first).total_seconds() >= (n - rate / 2 - 1) / rate * 0.9


async def test_worker_killed_mid_plan_then_restarted_loses_nothing(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 150
    plan_id = await make_plan(engine, emails(n), rate=50)
    env = worker_env(migrated, plan_id, EMAILPLAN_LEASE_SECONDS="3")
    first = workers.start(env)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 40, 60, workers)
    # The whole pod at once, as a node does: its worker processes are the supervisor's
    # forkserver's children, and a SIGTERM they got from their parent's death would let them
    # finish (and record) sends after the moment this test counts as the kill.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    await asyncio.sleep(0.5)  # a request written just before the kill may still be in moto's hands
    in_flight_at_kill = len(raw_sent(aws))
    counts_at_kill = await plans.get_counts(engine, plan_id) or {}

    await wait_exit([workers.start(env)], workers, 120)
    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)), "a recipient was lost"
    repeated = sum(v - 1 for v in to.values())
    # Only what SES accepted but the ledger had not recorded at the kill may repeat.
    assert repeated <= in_flight_at_kill - counts_at_kill["sent"]
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["sent"], counts["processing"], counts["created"]) == (n, 0, 0)


async def holding(engine: AsyncEngine, plan_id: object, owner_prefix: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                text(
                    "SELECT count(*) FROM messages WHERE plan_id = :p AND status = 'processing' "
                    "AND starts_with(lease_owner, :o)"
                ),
                {"p": plan_id, "o": owner_prefix},
            )
            or 0
        )


async def test_a_restarted_worker_slot_takes_back_what_its_dead_process_held_and_nothing_else(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    """Kubernetes restarts a killed container under the same Pod name: the new process frees
    what the dead one held at once (not a whole lease later), and never touches another pod's."""
    n = 3 * IDS_PER_QUEUE_MESSAGE  # three work messages: one for each pod, one left
    plan_id = await make_plan(engine, emails(n), rate=100)
    one = {"EMAILPLAN_WORKER_PROCESSES": "1"}
    pod = worker_env(migrated, plan_id, EMAILPLAN_POD_NAME="sender-a", **one)
    first = workers.start(pod)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 50, 60, workers)
    neighbour = workers.start(worker_env(migrated, plan_id, EMAILPLAN_POD_NAME="sender-b", **one))
    while not await holding(engine, plan_id, "sender-b/"):
        assert neighbour.poll() is None, workers.logs()
        await asyncio.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    await asyncio.sleep(0.5)  # a request written just before the kill may still be in moto's hands
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                text(
                    "SELECT id, lease_until, email FROM messages WHERE plan_id = :p"
                    " AND status = 'processing' AND starts_with(lease_owner, 'sender-a/0/')"
                ),
                {"p": plan_id},
            )
        ).all()
    assert held, "the killed worker held nothing: the test proves nothing"
    runs_out = min(row.lease_until for row in held)
    # The dead process's sends in flight: held, and already in SES's hands. Only these may be
    # sent again (the neighbour keeps sending, so counts taken now would not be exact).
    at_kill = {addressee(m) for m in received(aws)}
    in_flight = {row.email for row in held} & at_kill

    ids = [row.id for row in held]
    restarted = workers.start(pod)
    # The new process of the slot frees them at once (the orphan sweep sends them on), long
    # before the dead process's leases would have run out.
    while True:
        async with engine.connect() as conn:
            now, still = (
                await conn.execute(
                    text(
                        "SELECT now(), count(*) FILTER (WHERE status = 'processing' AND lease_until >= :out"
                        " AND starts_with(lease_owner, 'sender-a/0/')) FROM messages WHERE id = ANY(:ids)"
                    ),
                    {"ids": ids, "out": runs_out},
                )
            ).one()
        if not still:
            break
        assert now < runs_out, "the dead process's messages waited for their leases to run out"
        assert restarted.poll() is None, workers.logs()
        await asyncio.sleep(0.1)

    await wait_exit([restarted, neighbour], workers, 120)
    async with engine.connect() as conn:
        # No message held by a live pod was taken from it (a taken message is claimed twice).
        twice = await conn.scalar(
            text(
                "SELECT count(*) FROM messages WHERE plan_id = :p AND attempts > 1 AND NOT (id = ANY(:ids))"
            ),
            {"p": plan_id, "ids": ids},
        )
    assert twice == 0
    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)), "a recipient was lost"
    repeated = {address: count for address, count in to.items() if count > 1}
    assert set(repeated) <= in_flight and all(count == 2 for count in repeated.values()), (
        f"sent again beyond the dead process's {len(in_flight)} in flight: {repeated}"
    )


async def test_sigterm_finishes_in_flight_releases_the_rest_and_exits(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 60
    plan_id = await make_plan(engine, emails(n), rate=10)
    env = worker_env(migrated, plan_id, EMAILPLAN_EXIT_WHEN_IDLE="false")
    proc = workers.start(env)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 5, 60, workers)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == 0, workers.logs()
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None
    assert counts["processing"] == 0, "held messages were not released"
    assert counts["sent"] == len(raw_sent(aws)), "ledger and SES disagree after a graceful stop"
    assert counts["sent"] + counts["created"] == n

    await wait_exit(
        [workers.start(worker_env(migrated, plan_id, EMAILPLAN_MAX_SEND_RATE="1000"))], workers, 60
    )
    to = collections.Counter(addressee(m) for m in received(aws))
    assert len(to) == n and max(to.values()) == 1


async def test_rate_change_reaches_running_worker(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 80
    plan_id = await make_plan(engine, emails(n), rate=2)
    proc = workers.start(worker_env(migrated, plan_id))
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 2, 60, workers)
    start = time.monotonic()
    await plans.set_rate(engine, plan_id, 100)
    await wait_exit([proc], workers, 60)
    # at 2/s the rest would take ~39 s; at 100/s a few seconds
    assert time.monotonic() - start < 25


# ----------------------------------------------------------------------------- SES throttling


class ThrottlingProxy:
    """Real HTTP proxy: every ``every``-th SES SendEmail gets HTTP 429, the rest go to moto."""

    def __init__(
        self,
        upstream: str,
        every: int = 3,
        status: int = 429,
        code: str = "TooManyRequestsException",
        message: str = "Maximum sending rate exceeded.",
    ) -> None:
        self.upstream = upstream
        self.every = every
        self.status = status
        self.code = code
        self.message = message
        self.calls = 0
        self.throttled = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/v2/email/outbound-emails":
            self.calls += 1
            if self.calls % self.every == 0:
                self.throttled += 1
                return web.json_response(
                    {"__type": self.code, "message": self.message},
                    status=self.status,
                    headers={"x-amzn-ErrorType": self.code},
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            payload = await answer.read()
            return web.Response(
                body=payload,
                status=answer.status,
                headers={"Content-Type": answer.headers.get("Content-Type", "application/json")},
            )

    async def start(self) -> ThrottlingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_ses_throttling_slows_down_and_never_fails(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 60
    proxy = await ThrottlingProxy(aws.endpoint_url, every=3).start()
    try:
        plan_id = await make_plan(engine, emails(n), rate=100)
        proc = workers.start(worker_env(migrated, plan_id, EMAILPLAN_SES_ENDPOINT_URL=proxy.url))
        await wait_exit([proc], workers, 120)
    finally:
        await proxy.stop()
    assert proxy.throttled >= n // 4, "the proxy did not throttle: the test proves nothing"
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["sent"], counts["failed"]) == (n, 0)
    to = collections.Counter(addressee(m) for m in received(aws))
    assert len(to) == n and max(to.values()) == 1


# ----------------------------------------------------------------------------- PostgreSQL restart


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_postgres_restart_mid_plan_completes(
    own_postgres: PostgresServer, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    url = own_postgres.url
    await asyncio.to_thread(upgrade_to, url)
    n = 120
    eng = make_engine(url=url, pool_size=2)
    try:
        plan_id = await make_plan(eng, emails(n), rate=30)
        await eng.dispose()
        proc = workers.start(worker_env(url, plan_id, EMAILPLAN_LEASE_SECONDS="5"))
        await wait_counts(eng, plan_id, lambda c: c["sent"] >= 30, 60, workers)
        await eng.dispose()
        await asyncio.to_thread(own_postgres.restart, 2.0)
        await wait_exit([proc], workers, 120)
        counts = await plans.get_counts(eng, plan_id)
        assert counts is not None and (counts["sent"], counts["created"], counts["processing"]) == (n, 0, 0)
    finally:
        await eng.dispose()
    to = collections.Counter(addressee(m) for m in received(aws))
    assert set(to) == set(emails(n)), "a recipient was lost"
    assert sum(v - 1 for v in to.values()) <= 10, "more repeats than messages in flight at the outage"


async def test_suspend_pauses_resume_continues_stop_ends(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 200
    plan_id = await make_plan(engine, emails(n), rate=20)
    proc = workers.start(worker_env(migrated, plan_id, EMAILPLAN_EXIT_WHEN_IDLE="false"))
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 10, 60, workers)

    await set_suspended(engine, plan_id, True)
    # the pod gives back what it held; then nothing more leaves
    paused = await wait_counts(engine, plan_id, lambda c: c["processing"] == 0, 30, workers)
    await asyncio.sleep(2.0)
    still = await plans.get_counts(engine, plan_id) or {}
    assert still["sent"] == paused["sent"] == len(raw_sent(aws)), "sent while suspended"
    assert still["created"] == n - still["sent"]

    await set_suspended(engine, plan_id, False)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= paused["sent"] + 10, 60, workers)

    view = await plans.stop_plan(engine, plan_id, None)
    assert view.state == "stopped"
    final = await wait_counts(engine, plan_id, lambda c: c["processing"] == 0, 30, workers)
    await asyncio.sleep(1.0)
    final = await plans.get_counts(engine, plan_id) or {}
    assert final["sent"] + final["stopped"] == n and final["created"] == 0
    assert final["sent"] < n, "stop came too late to prove anything"
    assert len(raw_sent(aws)) == final["sent"], "SES received mail the ledger does not count as sent"
    assert proc.poll() is None, "a stopped plan's pod keeps running until scaled to 0"


async def test_transient_ses_errors_are_retried_not_failed(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    n = 40
    proxy = await ThrottlingProxy(
        aws.endpoint_url, every=4, status=503, code="ServiceUnavailable", message="Service unavailable"
    ).start()
    try:
        plan_id = await make_plan(engine, emails(n), rate=100)
        env = worker_env(migrated, plan_id, EMAILPLAN_SES_ENDPOINT_URL=proxy.url, EMAILPLAN_MAX_ATTEMPTS="10")
        await wait_exit([workers.start(env)], workers, 120)
    finally:
        await proxy.stop()
    assert proxy.throttled >= n // 5, "the proxy injected no errors: the test proves nothing"
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["sent"], counts["failed"]) == (n, 0)
    to = collections.Counter(addressee(m) for m in received(aws))
    assert len(to) == n and max(to.values()) == 1


# ----------------------------------------------------------------------------- account paused / capped


@pytest.mark.parametrize(
    ("status", "code"), [(400, "SendingPausedException"), (400, "AccountSuspendedException")]
)
async def test_paused_ses_account_holds_the_plan_without_failing_messages(
    status: int,
    code: str,
    engine: AsyncEngine,
    migrated: str,
    aws: MotoServer,
    ses_identity: None,
    workers: Workers,
) -> None:
    n = 30
    # every SendEmail answers the account error (SES v2 wire format) until the account is reinstated
    proxy = await ThrottlingProxy(
        aws.endpoint_url, every=1, status=status, code=code, message="paused"
    ).start()
    try:
        plan_id = await make_plan(engine, emails(n), rate=50)
        env = worker_env(
            migrated,
            plan_id,
            EMAILPLAN_SES_ENDPOINT_URL=proxy.url,
            EMAILPLAN_MAX_ATTEMPTS="2",  # a transient error would fail a message on its 2nd try
            EMAILPLAN_SES_PAUSED_BACKOFF_SECONDS="2",
        )
        proc = workers.start(env)
        deadline = time.monotonic() + 60
        while proxy.throttled < 3 * 2:  # several pause rounds, each answered for every probe
            assert time.monotonic() < deadline, f"worker never retried the paused account:\n{workers.logs()}"
            assert proc.poll() is None, f"worker exited:\n{workers.logs()}"
            await asyncio.sleep(0.2)
        # while paused: nothing failed, nothing sent, nothing held back from other pods
        held = await wait_counts(engine, plan_id, lambda c: c["processing"] == 0, 30, workers)
        assert (held["failed"], held["sent"], held["created"]) == (0, 0, n)
        assert proc.poll() is None, "the worker gave up on a paused plan"
        full_logs = "".join(f.read_text() for f in workers.tmp.glob("worker-*.log"))
        assert "SES account cannot send" in full_logs and code in full_logs

        proxy.every = 10**9  # account reinstated: the proxy passes everything to SES
        await wait_exit([proc], workers, 90)
    finally:
        await proxy.stop()
    counts = await plans.get_counts(engine, plan_id)
    assert counts is not None and (counts["sent"], counts["failed"]) == (n, 0)
    to = collections.Counter(addressee(m) for m in received(aws))
    assert len(to) == n and max(to.values()) == 1


async def test_two_plans_together_stay_under_the_account_max_send_rate(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    cap, per_plan = 10.0, 40
    plans = [await make_plan(engine, emails(per_plan, prefix=p), rate=25) for p in ("a", "b")]
    procs = [workers.start(worker_env(migrated, p, EMAILPLAN_MAX_SEND_RATE=str(cap))) for p in plans]
    await wait_exit(procs, workers, 120)

    to = collections.Counter(addressee(m) for m in received(aws))
    everyone = set(emails(per_plan, prefix="a")) | set(emails(per_plan, prefix="b"))
    assert set(to) == everyone and max(to.values()) == 1, "a recipient was lost or got two emails"
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT plan_id, min(sent_at), max(sent_at) FROM messages GROUP BY plan_id")
            )
        ).all()
    assert len(rows) == 2
    first, last = min(r[1] for r in rows), max(r[2] for r in rows)
    # the plans' rates add up to 50/s; together they must not pass the account's 10/s
    # (the account bucket allows a burst of cap/2 on top). Loose bound: slow machines are never fast.
    total = 2 * per_plan
    assert (last - first).total_seconds() >= (total - cap / 2) / cap * 0.9
    # and the two plans really ran at the same time (each had part of the cap)
    assert max(r[1] for r in rows) < min(r[2] for r in rows)

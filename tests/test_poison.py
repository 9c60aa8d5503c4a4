"""One bad message never stops the worker (issue 20): real ``emailplan worker`` processes,
real PostgreSQL, SQS and SES in moto.

A message that cannot be rendered or sent fails alone, with a stored reason (``error``
column: a class prefix and the detail), and the worker goes on with the rest; every
accepted row ends ``sent`` or ``failed``. What reached SES is parsed back as a mail reader
would: no header added by user data, addresses in their ASCII (punycode) form, and user
text (a name, a variable) decoded back to exactly what was written.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import time
import uuid
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import idna
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.worker import SENDER_HEADERS, SPEC, Workers, raw_sent, wait_exit, worker_env

from devenv.moto import MotoServer
from emailplan.contract.headers import one_line
from emailplan.contract.plans import LoadResult
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import loading, plans
from emailplan.sender.workqueue import WorkQueue

INTENDED = SENDER_HEADERS - {"reply-to"}  # these plans set no replyTo
PLAN = {**SPEC, "subject": "Hello {{ name }} {{ code }}"}


async def plan_with(engine: AsyncEngine, rows: list[dict[str, Any]]) -> tuple[uuid.UUID, LoadResult]:
    """A plan whose list went through intake (the same row check as every upload)."""
    plan_id = uuid.uuid4()
    await plans.upsert_plan(engine, plan_id, name="poison", namespace="ns", spec=PLAN, rate_per_second=500)
    result = await loading.insert_recipients(engine, plan_id, enumerate(rows, 1))
    return plan_id, result


async def complete(engine: AsyncEngine, plan_id: uuid.UUID) -> None:
    async with WorkQueue.open(SenderSettings()) as queue:
        await loading.complete_recipients(engine, plan_id, queue)


async def outcomes(engine: AsyncEngine, plan_id: uuid.UUID) -> dict[str, tuple[str, str | None]]:
    """Each stored address: its status and error."""
    return {
        email: (status, error) for _, (email, _, status, error) in (await messages(engine, plan_id)).items()
    }


async def messages(engine: AsyncEngine, plan_id: uuid.UUID) -> dict[int, tuple[str, int, str, str | None]]:
    """Each message id: its address, list row number, status and error."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT id, email, row_no, status, error FROM messages WHERE plan_id = :p"), {"p": plan_id}
        )
        return {r.id: (r.email, r.row_no, r.status, r.error) for r in found}


def received_for(aws: MotoServer, plan_id: uuid.UUID) -> list[EmailMessage]:
    out = []
    for stored in raw_sent(aws):
        raw = str(stored.get("raw_data") or "")
        if f"X-EmailPlan-Plan-Id: {plan_id}" in raw:
            msg = email.message_from_string(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
    return out


def full_logs(workers: Workers) -> str:
    return "\n".join(p.read_text() for p in sorted(workers.tmp.glob("worker-*.log")))


def display_name(msg: EmailMessage) -> str:
    """The To display name as RFC 2047 decodes it.

    ``policy.default``'s address parser puts a space between adjacent encoded words (a long
    name needs several), which RFC 2047 section 6.2 says to drop; ``decode_header`` does.
    """
    raw = next(v for k, v in msg.raw_items() if k.lower() == "to")
    phrase = str(raw).rsplit("<", 1)[0].strip() if "<" in str(raw) else ""
    if "=?" not in phrase:
        return str(msg["To"].addresses[0].display_name)
    return str(make_header(decode_header(phrase)))


def ascii_form(address: str) -> str:
    """The oracle for the sent form: the idna package's IDNA 2008 (UTS 46) encoding of the domain."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{idna.encode(domain, uts46=True).decode()}".lower()


async def test_rows_ses_cannot_send_fail_alone_with_a_reason_and_the_worker_goes_on(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    """Rows stored before intake refused them (a non-ASCII local part, an IDN domain kept in
    Unicode): the first fails with an ``InvalidAddress`` reason, the second is sent as
    punycode, and every plain row around them is sent by the same worker process."""
    rows = [{"email": f"ok{i}@example.com", "name": f"N{i}", "vars": {"code": "c"}} for i in range(6)]
    plan_id, _ = await plan_with(engine, rows)
    async with engine.begin() as conn:  # what an older version stored
        await conn.execute(
            text("UPDATE messages SET email = :e WHERE plan_id = :p AND email = 'ok0@example.com'"),
            {"e": "üser@example.com", "p": plan_id},
        )
        await conn.execute(
            text("UPDATE messages SET email = :e WHERE plan_id = :p AND email = 'ok1@example.com'"),
            {"e": "user@bücher.example", "p": plan_id},
        )
    await complete(engine, plan_id)
    proc = workers.start(worker_env(migrated, plan_id))
    await wait_exit([proc], workers, 90)
    assert "worker task crashed" not in workers.logs()
    found = await outcomes(engine, plan_id)
    status, error = found["üser@example.com"]
    assert status == "failed" and str(error).startswith("InvalidAddress: non-ASCII local part"), found
    assert {s for e, (s, _) in found.items() if e != "üser@example.com"} == {"sent"}, found
    to = {m["To"].addresses[0].addr_spec for m in received_for(aws, plan_id)}
    assert "user@xn--bcher-kva.example" in to and len(to) == 5


async def test_a_worker_whose_task_dies_of_a_bug_exits_non_zero(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers
) -> None:
    """A crash is not a finish: a worker exiting 0 tells the pod supervisor the plan is over
    (it then stops the siblings and exits 0 itself), so a crash must exit non-zero.

    The bug here: a plan row of a shape no intake writes (``tracking`` a string) read by the
    running worker's plan loop."""
    plan_id, _ = await plan_with(engine, [{"email": "ann@example.com"}])
    await plans.upsert_plan(
        engine, plan_id, name="poison", namespace="ns", spec=PLAN, rate_per_second=500, suspended=True
    )
    await complete(engine, plan_id)
    env = worker_env(migrated, plan_id, EMAILPLAN_EXIT_WHEN_IDLE="false", EMAILPLAN_WORKER_PROCESSES="1")
    proc = workers.start(env)
    while "plan rate changed" not in full_logs(workers):  # the plan is read: the plan loop runs
        assert proc.poll() is None, workers.logs()
        await asyncio.sleep(0.2)
    bad = {**PLAN, "tracking": "on"}
    await plans.upsert_plan(
        engine, plan_id, name="poison", namespace="ns", spec=bad, rate_per_second=500, suspended=True
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        assert time.monotonic() < deadline, workers.logs()
        await asyncio.sleep(0.2)
    logs = full_logs(workers)
    assert "worker task crashed" in logs
    # Exit code 0 would tell the pod supervisor (and Kubernetes) the plan is finished.
    assert proc.returncode == 1, logs[-5000:]


# ---------------------------------------------------------------- property: anything intake accepts

domain_labels = st.text(
    alphabet=st.characters(categories=["Ll", "Lo"], max_codepoint=0x4FFF), min_size=1, max_size=10
) | st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True)
addresses = st.builds(
    lambda local, label: f"{local}@{label}.example",
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,15}", fullmatch=True),
    domain_labels,
)
texts = st.text(max_size=80) | st.sampled_from(
    ["=?utf-8?q?X?=", "=?utf-8?b?QmNjOiB4QHkuZXhhbXBsZQ==?=", "Zoë \r\nBcc: x@evil.example", "😀" * 30]
)
rows_strategy = st.lists(
    st.fixed_dictionaries(
        {"email": addresses, "name": texts, "vars": st.fixed_dictionaries({"code": texts})}
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=int(os.environ.get("EMAILPLAN_HYPOTHESIS_POISON_EXAMPLES", "5")),
    deadline=None,
    # Every example runs a worker process: shrinking would take minutes; failures print as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=rows_strategy)
@example(
    rows=[
        {"email": "user@bücher.example", "name": "Zoë Müller", "vars": {"code": "=?utf-8?q?X?="}},
        {"email": "plain@example.com", "name": "=?utf-8?q?Y?=", "vars": {"code": "ü" * 200}},
    ]
)
async def test_any_row_intake_accepts_ends_sent_or_failed_without_a_header_of_its_own(
    engine: AsyncEngine, migrated: str, aws: MotoServer, ses_identity: None, workers: Workers, rows: Any
) -> None:
    plan_id, load = await plan_with(engine, rows)
    await complete(engine, plan_id)
    if not load.accepted:
        return
    proc = workers.start(worker_env(migrated, plan_id))
    await wait_exit([proc], workers, 90)
    assert "worker task crashed" not in workers.logs()
    found = await messages(engine, plan_id)
    for address, _, status, error in found.values():
        assert status == "sent" or (status == "failed" and error), (address, status, error)
    got = received_for(aws, plan_id)
    assert len(got) == sum(1 for *_, s, _ in found.values() if s == "sent")
    for msg in got:
        names = [k.lower() for k in msg]
        assert set(names) <= INTENDED and len(names) == len(set(names)), names
        address, row_no, _, _ = found[int(msg["X-EmailPlan-Message-Id"])]
        row = rows[row_no - 1]
        (to,) = msg["To"].addresses
        assert to.addr_spec == address == ascii_form(row["email"])  # sent as punycode, stored so
        name = row["name"].strip()
        assert display_name(msg) == one_line(name)
        assert msg["Subject"] == one_line(f"Hello {name} {row['vars']['code']}")


# ---------------------------------------------------------------- addresses stored before the ASCII form


def test_upgrade_rewrites_stored_idn_addresses_so_old_suppressions_still_match(database_url: str) -> None:
    """Suppressions and unsent rows stored in the Unicode form before 0007 match new rows after it."""
    from emailplan.sender.db import make_engine
    from emailplan.sender.migrate import upgrade_to

    upgrade_to(database_url, "0006_count_names")

    async def before() -> uuid.UUID:
        # Rows as that revision stores them, in SQL of its schema: the store's statements of
        # today write columns later migrations add.
        engine = make_engine(url=database_url, pool_size=2)
        plan_id = uuid.uuid4()
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO plans (id, name, namespace) VALUES (:p, 'poison', 'ns')"),
                    {"p": plan_id},
                )
                await conn.execute(
                    text(
                        "INSERT INTO messages (plan_id, row_no, email) VALUES "
                        "(:p, 1, 'keep@bücher.example'), (:p, 2, 'ok@example.com')"
                    ),
                    {"p": plan_id},
                )
                await conn.execute(
                    text(
                        "INSERT INTO suppressions (email, reason) VALUES "
                        "('gone@bücher.example', 'complaint'), ('üser@example.com', 'bounce')"
                    )
                )
            return plan_id
        finally:
            await engine.dispose()

    async def after(plan_id: uuid.UUID) -> tuple[set[str], set[str], LoadResult]:
        engine = make_engine(url=database_url, pool_size=2)
        try:
            async with engine.connect() as conn:
                suppressed = set((await conn.execute(text("SELECT email FROM suppressions"))).scalars())
                stored = set(
                    (
                        await conn.execute(
                            text("SELECT email FROM messages WHERE plan_id = :p"), {"p": plan_id}
                        )
                    ).scalars()
                )
            _, load = await plan_with(
                engine, [{"email": "Gone@BÜCHER.example"}, {"email": "new@example.com"}]
            )
            return suppressed, stored, load
        finally:
            await engine.dispose()

    plan_id = asyncio.run(before())
    upgrade_to(database_url)
    suppressed, stored, load = asyncio.run(after(plan_id))
    assert suppressed == {"gone@xn--bcher-kva.example", "üser@example.com"}
    assert stored == {"keep@xn--bcher-kva.example", "ok@example.com"}
    assert (load.accepted, load.suppressed) == (1, 1), load

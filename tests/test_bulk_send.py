"""``ses.sendApi: bulk``: plans sent with SES SendBulkEmail from a stored template.

What a campaign owner would notice: which templates bulk mode takes (refused with the field
and line named otherwise), and that each recipient still receives exactly one email of their
own: their variables (escaped in HTML as raw mode does), their signed open, click and
unsubscribe links, their List-Unsubscribe header and message tag; a rejected entry fails
alone, a throttled one is sent later, and a pod process killed mid-plan loses nobody. SES is a
local endpoint that speaks the SES v2 wire format (``support.sesbulk``; moto has no bulk call).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.sesbulk import SesBulkStub
from support.worker import EXE, PUBLIC, TOKEN_KEY, Workers, emails, wait_counts, wait_exit, worker_env

from emailplan.contract.plans import PlanPayload
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import loading, plans
from emailplan.sender.tokens import read_token
from emailplan.sender.workqueue import WorkQueue

SPEC: dict[str, Any] = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "html": '<p>Hi {{ name }}, your code is {{ code }}</p><a href="https://shop.example.com/">shop</a>',
    "text": "Hi {{ name }}, your code is {{ code }}",
    "tracking": {"opens": True, "clicks": True},
    "ses": {"sendApi": "bulk"},
}


def payload(**fields: Any) -> dict[str, Any]:
    base = {"name": "p", "from": "news@example.com", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}
    return {**base, **fields, "ses": {"sendApi": "bulk"}}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"subject": "Hi {{ name|upper }}"}, "subject: line 1"),
        ({"html": "<p>{% if vip %}Dear{% endif %} {{ name }}</p>"}, "html: line 1"),
        ({"text": "a\n{% for x in items %}{{ x }}{% endfor %}"}, "text: line 2"),
        ({"text": "Total {{ price * 2 }}"}, "text: line 1"),
        ({"html": "<p>{{ user.name }}</p>"}, "html: line 1"),
        (
            {"variants": [{"name": "a", "subject": "A"}, {"name": "b", "subject": "B"}], "testPercent": 10},
            "variants: ses.sendApi bulk",
        ),
    ],
)
def test_bulk_plan_with_templates_ses_cannot_fill_is_refused_naming_the_field(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        PlanPayload.model_validate(payload(**fields))
    assert problem in str(refused.value)
    PlanPayload.model_validate({**payload(**fields), "ses": {"sendApi": "raw"}})  # raw takes them all


def test_bulk_plan_with_plain_substitutions_is_accepted_and_raw_is_the_default() -> None:
    plan = PlanPayload.model_validate(payload(html="<p>Hi {{ name }}, {{ code }} {{ unsubscribe_url }}</p>"))
    assert plan.sending_spec()["ses"] == {"configurationSet": None, "tags": {}, "sendApi": "bulk"}
    assert PlanPayload.model_validate({**payload(), "ses": {}}).ses.send_api == "raw"


@pytest.fixture
def ses_bulk() -> Iterator[SesBulkStub]:
    stub = SesBulkStub().start()
    yield stub
    stub.stop()


async def make_bulk_plan(engine: AsyncEngine, people: list[tuple[str, str]], rate: float) -> uuid.UUID:
    plan_id = uuid.uuid4()
    await plans.upsert_plan(engine, plan_id, name="t", namespace="ns", spec=SPEC, rate_per_second=rate)
    rows = ((i, {"email": e, "name": n, "vars": {"code": f"C{i}"}}) for i, (e, n) in enumerate(people, 1))
    await loading.insert_recipients(engine, plan_id, rows)
    async with WorkQueue.open(SenderSettings()) as queue:
        await loading.complete_recipients(engine, plan_id, queue)
    return plan_id


def start_pod(ws: Workers, env: dict[str, str], processes: int) -> subprocess.Popen[bytes]:
    log = open(ws.tmp / f"worker-{len(ws.procs)}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [EXE, "worker", "--processes", str(processes)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    ws.procs.append(proc)
    return proc


async def test_bulk_plan_each_recipient_gets_one_email_of_their_own(
    engine: AsyncEngine, migrated: str, aws: object, workers: Workers, ses_bulk: SesBulkStub
) -> None:
    good = [(e, f"N{i} <&>") for i, e in enumerate(emails(150))]
    throttled = [("throttle1@example.com", "T1"), ("throttle2@example.com", "T2")]
    plan_id = await make_bulk_plan(engine, [*good, *throttled, ("reject1@example.com", "R")], rate=300)
    env = worker_env(migrated, plan_id, EMAILPLAN_SES_ENDPOINT_URL=ses_bulk.url)
    await wait_exit([start_pod(workers, env, processes=2)], workers, 120)

    got = ses_bulk.received_by()
    expected = {e for e, _ in good + throttled}
    assert set(got) == expected, (
        f"missing {sorted(expected - set(got))[:3]}, extra {sorted(set(got) - expected)[:3]}"
    )
    assert max(len(v) for v in got.values()) == 1
    counts = await plans.get_counts(engine, plan_id) or {}
    assert [counts.get(k) for k in ("sent", "failed", "created", "processing")] == [152, 1, 0, 0]
    async with engine.connect() as conn:
        rows = {
            r.email: r
            for r in await conn.execute(text("SELECT * FROM messages WHERE plan_id = :p"), {"p": plan_id})
        }
    assert "MESSAGE_REJECTED" in str(rows["reject1@example.com"].error)
    for address, (mail,) in got.items():
        row = rows[address]
        assert mail.message_id == row.ses_message_id  # SES events map back to the message
        assert mail.sender == "News <news@example.com>"
        assert mail.tags["emailplan-message"] == str(row.id) and mail.tags["emailplan-plan"] == str(plan_id)
        assert mail.headers["X-EmailPlan-Message-Id"] == str(row.id)
        assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsub = mail.headers["List-Unsubscribe"][1:-1]
        assert read_token(TOKEN_KEY.encode(), "unsub", unsub.split("t=")[1]) == row.id
        assert mail.subject == f"Hello {row.name}"
        assert mail.text is not None and mail.html is not None
        assert mail.text.startswith(f"Hi {row.name}, your code is C{row.row_no}") and unsub in mail.text
        escaped = row.name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert f"<p>Hi {escaped}, your code is C{row.row_no}</p>" in mail.html
        assert f"{PUBLIC}/v1/events/open?requestId=" in mail.html
        click = mail.html.split('<a href="')[1].split('"')[0].replace("&amp;", "&")
        assert click.startswith(f"{PUBLIC}/v1/events/click?t=") and "shop.example.com" in click
        pixel = mail.html.split("requestId=")[1].split('"')[0]
        assert read_token(TOKEN_KEY.encode(), "open", pixel) == row.id
    # The point of bulk mode: many recipients per SES call, the template stored once per process.
    assert ses_bulk.bulk_calls < len(expected) / 3, ses_bulk.entries
    assert max(ses_bulk.entries) <= 50 and len(ses_bulk.templates) == 1 and ses_bulk.template_creates <= 2


async def test_bulk_pod_process_killed_mid_plan_loses_nobody(
    engine: AsyncEngine, migrated: str, aws: object, workers: Workers, ses_bulk: SesBulkStub
) -> None:
    n = 300
    people = [(e, f"N{i}") for i, e in enumerate(emails(n))]
    plan_id = await make_bulk_plan(engine, people, rate=60)
    env = worker_env(migrated, plan_id, EMAILPLAN_SES_ENDPOINT_URL=ses_bulk.url, EMAILPLAN_LEASE_SECONDS="3")
    pod = start_pod(workers, env, processes=2)
    await wait_counts(engine, plan_id, lambda c: c["sent"] >= 60, 90, workers)
    kids = [int(p.parent.name) for p in _children(pod.pid)]
    assert len(kids) == 2, workers.logs()
    victim = kids[0]
    os.kill(victim, signal.SIGKILL)
    async with engine.connect() as conn:
        in_flight = set(
            (
                await conn.execute(
                    text(
                        "SELECT email FROM messages WHERE plan_id = :p AND status = 'processing' "
                        "AND lease_owner LIKE :owner"
                    ),
                    {"p": plan_id, "owner": f"%-{victim}-%"},
                )
            ).scalars()
        )
    await wait_exit([pod], workers, 180)
    got = ses_bulk.received_by()
    missing = {e for e, _ in people} - set(got)
    assert not missing, f"{len(missing)} recipients lost, e.g. {sorted(missing)[:3]}"
    twice = {address for address, mails in got.items() if len(mails) > 1}
    assert twice <= in_flight, (
        f"sent twice but not held by the killed process: {sorted(twice - in_flight)[:5]}"
    )
    final = await plans.get_counts(engine, plan_id) or {}
    assert [final.get(k) for k in ("sent", "processing", "created")] == [n, 0, 0]


def _children(pid: int) -> list[Path]:
    deadline = time.monotonic() + 30
    while True:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(stat)
        if len(out) >= 2 or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


async def test_bulk_rows_ses_cannot_send_fail_alone_and_idn_domains_go_out_as_punycode(
    engine: AsyncEngine, migrated: str, aws: object, workers: Workers, ses_bulk: SesBulkStub
) -> None:
    """Rows stored before intake refused them: the one with a non-ASCII local part fails alone with
    an ``InvalidAddress`` reason; the IDN one (kept in Unicode) is sent as punycode; the rest go."""
    people = [(e, f"Zoë {i}") for i, e in enumerate(emails(8))]
    plan_id = await make_bulk_plan(engine, people, rate=300)
    async with engine.begin() as conn:  # what an older version stored
        for old, new in (("r0@example.com", "üser@example.com"), ("r1@example.com", "user@bücher.example")):
            await conn.execute(
                text("UPDATE messages SET email = :new WHERE plan_id = :p AND email = :old"),
                {"new": new, "old": old, "p": plan_id},
            )
    env = worker_env(migrated, plan_id, EMAILPLAN_SES_ENDPOINT_URL=ses_bulk.url)
    await wait_exit([start_pod(workers, env, processes=1)], workers, 120)
    async with engine.connect() as conn:
        rows = {
            r.email: (r.status, r.error)
            for r in await conn.execute(text("SELECT * FROM messages WHERE plan_id = :p"), {"p": plan_id})
        }
    status, error = rows.pop("üser@example.com")
    assert status == "failed" and str(error).startswith("InvalidAddress: non-ASCII local part"), error
    assert {s for s, _ in rows.values()} == {"sent"}, rows
    got = ses_bulk.received_by()
    assert "user@xn--bcher-kva.example" in got and len(got) == 7, sorted(got)
    assert all(to.isascii() for to in got)

"""Follow-ups and retries end to end (issue 24): the real operator, API, pods, PostgreSQL and moto.

A follow-up to the non-openers of a 1,000-recipient plan: opens are the pixel URLs of the
emails moto stored, fetched like a mail client; some non-openers are suppressed meanwhile.
The follow-up's ``after`` (48 hours) passes on the operator's test clock.

A retry of a 1,000-recipient plan whose sends to some addresses SES answered with transient
errors until the senders gave up (``support.flakyses`` in front of moto), and some of whose
mails soft-bounced, hard-bounced or drew complaints (SES events signed as SNS signs them).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from support.clock import MACHINE_OPEN_WINDOW, ClockStack, addressee, clock_stack, mails, open_pixel
from support.e2e import apply_list, done, plan_yaml
from support.flakyses import FlakySes

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.postgres import PostgresServer
from devenv.sns import ses_event
from emailplan.operator import rules

pytestmark = [pytest.mark.kube, pytest.mark.slow]

RECIPIENTS = 1000


@pytest.fixture(scope="module")
def flaky(moto_server: MotoServer) -> Iterator[FlakySes]:
    proxy = FlakySes(moto_server.endpoint_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def cst(
    crd_installed: KubeCluster, postgres: PostgresServer, moto_server: MotoServer, flaky: FlakySes
) -> Iterator[ClockStack]:
    senders_env = {"EMAILPLAN_SES_ENDPOINT_URL": flaky.url}
    with clock_stack(crd_installed, postgres, moto_server, "emailplan-e2e-followups-", senders_env) as st:
        yield st


# One sender pod per plan in this module: with two, a pod slowed down by the shared machine can
# lose messages it holds to the other (their leases run out), and what it had in flight then
# leaves twice, which the exact per-address counts below would see.


def follow_up(name: str, source: str, subject: str) -> str:
    doc = json.loads(plan_yaml(name, inline=[], rate=250, max_replicas=1, per_pod_rate=250, subject=subject))
    doc["spec"]["recipients"] = {"fromPlan": {"name": source, "outcome": "notOpened", "after": "48h"}}
    return json.dumps(doc)


def test_follow_up_mails_exactly_the_non_openers_minus_new_suppressions_once(
    cst: ClockStack, namespace: str
) -> None:
    marker = f"{namespace}-fu"
    emails = [f"{marker}{i}@example.com" for i in range(RECIPIENTS)]
    apply_list(cst, namespace, "spring-list", [f"{e},P{i},Rome" for i, e in enumerate(emails)])
    source = json.loads(
        plan_yaml("spring", recipients_cm="spring-list", rate=250, max_replicas=1, per_pod_rate=250)
    )
    source["spec"]["subject"] = "Spring {{ name }}"
    cst.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(source))
    spring = cst.wait_status(namespace, "spring", done, "source plan completed", timeout=300)
    assert spring["sent"] == RECIPIENTS

    # People open every third email, later than the machine-open window after the send.
    time.sleep(MACHINE_OPEN_WINDOW + 1)
    sent = mails(cst, marker, "Spring")
    assert Counter(addressee(m) for m in sent) == Counter(emails)
    openers = {addressee(m) for m in sent if int(addressee(m).split("@")[0].removeprefix(marker)) % 3 == 0}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_pixel, [m for m in sent if addressee(m) in openers]))
    cst.wait_status(namespace, "spring", lambda s: s.get("opened") == len(openers), "opens counted")

    # Since then some non-openers unsubscribed or were suppressed: the follow-up skips them.
    non_openers = sorted(set(emails) - openers)
    newly_suppressed = non_openers[:10]
    cst.suppress(newly_suppressed[:5], reason="unsubscribe")
    cst.suppress(newly_suppressed[5:])

    cst.kubectl(
        "apply", "-n", namespace, "-f", "-", input=follow_up("reminder", "spring", "Reminder {{ name }}")
    )
    completed_at = rules.parse_time(spring["completedAt"])
    assert completed_at is not None
    takes_at = rules.format_time(completed_at + timedelta(hours=48))
    waiting = cst.wait_status(
        namespace,
        "reminder",
        lambda s: s.get("phase") == "Scheduled" and takes_at in (s.get("message") or ""),
        "the follow-up waits 48h after the source completed, and says until when",
    )
    assert waiting["audience"]["takesAt"] == takes_at and "matched" not in waiting["audience"]
    assert not mails(cst, marker, "Reminder")

    cst.advance(48 * 3600)
    status = cst.wait_status(namespace, "reminder", done, "follow-up completed", timeout=300)
    expected = set(non_openers) - set(newly_suppressed)
    got = Counter(addressee(m) for m in mails(cst, marker, "Reminder"))
    assert got == Counter(expected)  # exactly the non-openers minus the new suppressions, once each
    assert status["audience"]["matched"] == len(non_openers)
    assert status["audience"]["suppressed"] == len(newly_suppressed)
    assert (status["total"], status["sent"], status["suppressed"]) == (
        len(non_openers),
        len(expected),
        len(newly_suppressed),
    )

    # Re-applying (unchanged, then changed) and asking the data plane again resend nothing.
    cst.kubectl(
        "apply", "-n", namespace, "-f", "-", input=follow_up("reminder", "spring", "Reminder {{ name }}")
    )
    cst.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=follow_up("reminder", "spring", "Reminder again {{ name }}"),
    )
    generation = json.loads(cst.kubectl("get", "eplan", "reminder", "-n", namespace, "-o", "json"))[
        "metadata"
    ]
    cst.wait_status(
        namespace,
        "reminder",
        lambda s: s.get("observedGeneration") == generation["generation"] and done(s),
        "the changed follow-up observed",
    )
    spring_uid = json.loads(cst.kubectl("get", "eplan", "spring", "-n", namespace, "-o", "json"))["metadata"][
        "uid"
    ]
    job = cst.api_call(
        "POST",
        f"/v1/plans/{generation['uid']}/recipients/from-plan",
        {"planId": spring_uid, "outcome": "notOpened"},
    )
    assert (job["accepted"], job["suppressed"]) == (len(expected), len(newly_suppressed))
    assert Counter(addressee(m) for m in mails(cst, marker, "Reminder")) == Counter(expected)
    assert cst.status(namespace, "reminder")["sent"] == len(expected)


def test_retry_sends_only_the_transient_failures_and_soft_bounces_once(
    cst: ClockStack, flaky: FlakySes, namespace: str
) -> None:
    marker = f"{namespace}-rt"
    emails = [f"{marker}{i}@example.com" for i in range(RECIPIENTS)]
    transient, soft, hard, complained = emails[:30], emails[30:50], emails[50:55], emails[55:60]
    flaky.failing.update(transient)
    apply_list(cst, namespace, "flaky-list", [f"{e},P{i},Rome" for i, e in enumerate(emails)])
    doc = json.loads(
        plan_yaml("flaky", recipients_cm="flaky-list", rate=200, max_replicas=1, per_pod_rate=200)
    )
    doc["spec"]["subject"] = "Flaky {{ name }}"
    cst.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    status = cst.wait_status(namespace, "flaky", done, "plan completed", timeout=300)
    assert (status["sent"], status["failed"]) == (RECIPIENTS - len(transient), len(transient))
    assert all(flaky.refused[a] >= 2 for a in transient)  # retried by the senders before they gave up
    assert not set(Counter(addressee(m) for m in mails(cst, marker, "Flaky"))) & set(transient)

    # SES reports soft bounces, hard bounces and complaints for some of the mails that left.
    uid = json.loads(cst.kubectl("get", "eplan", "flaky", "-n", namespace, "-o", "json"))["metadata"]["uid"]
    rows = cst.psql(f"SELECT email || ' ' || ses_message_id FROM messages WHERE plan_id = '{uid}'")
    ses_ids = dict(line.split(" ", 1) for line in rows if " " in line)
    reports = [
        (soft, "Bounce", "Transient"),
        (hard, "Bounce", "Permanent"),
        (complained, "Complaint", "Permanent"),
    ]
    for group, kind, bounce_type in reports:
        for addr in group:
            event = cst.ses_notification(ses_event(kind, ses_ids[addr], [addr], bounce_type=bounce_type))
            assert cst.post_sns(event)["status"] == "recorded"
    reported = (len(soft), len(hard), len(complained))
    cst.wait_status(
        namespace,
        "flaky",
        lambda s: (s.get("softBounced"), s.get("bounced"), s.get("complained")) == reported,
        "bounces and complaints counted",
    )

    # SES is healthy again; the user asks the finished plan to retry (generation 1).
    flaky.failing.clear()
    retry = '{"spec":{"retry":{"generation":1}}}'
    cst.kubectl("patch", "eplan", "flaky", "-n", namespace, "--type=merge", "-p", retry)
    status = cst.wait_status(
        namespace,
        "flaky",
        lambda s: done(s) and (s.get("retry") or {}).get("generation") == 1 and s.get("sent") == RECIPIENTS,
        "the retry sent and the plan completed again",
        timeout=300,
    )
    assert (status["retried"], status["failed"]) == (len(transient) + len(soft), 0)
    expected = Counter(emails) + Counter(soft)  # the soft-bounced got a second mail, the failed their first
    assert Counter(addressee(m) for m in mails(cst, marker, "Flaky")) == expected
    assert any(e["reason"] == "Retrying" for e in cst.events(namespace, "flaky"))

    # The same generation again (with another change to the plan) sends nothing more.
    slower = '{"spec":{"rate":{"perSecond":400}}}'
    cst.kubectl("patch", "eplan", "flaky", "-n", namespace, "--type=merge", "-p", slower)
    meta = json.loads(cst.kubectl("get", "eplan", "flaky", "-n", namespace, "-o", "json"))["metadata"]
    status = cst.wait_status(
        namespace,
        "flaky",
        lambda s: s.get("observedGeneration") == meta["generation"] and done(s),
        "change seen",
    )
    assert cst.api_call("POST", f"/v1/plans/{uid}/retry", {"generation": 1}) == {
        "generation": 1,
        "requeued": 0,
    }
    assert status["retried"] == len(transient) + len(soft)
    assert Counter(addressee(m) for m in mails(cst, marker, "Flaky")) == expected

"""Campaign features end to end (issue 15): an A/B test, a rollout gate and a send window.

The real parts of ``test_e2e_operator``: kube-apiserver, PostgreSQL, moto, ``emailplan api``,
the pod runner with real ``emailplan worker`` processes and the real operator. Opens are the
pixel URLs of the emails moto stored, fetched like a mail client would; bounces are SES events
signed like SNS signs them. Hours of waiting (decideAfter, a step's hold, a closed window) pass
through the operator's test clock: ``EMAILPLAN_CLOCK_OFFSET_FILE`` (dev mode only) holds the
seconds it adds to real time, and the tests move it forward; nothing sleeps for minutes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from support.clock import MACHINE_OPEN_WINDOW, ClockStack, addressee, clock_stack, mails, open_pixel
from support.e2e import Stack, apply_list, done, plan_yaml

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import wait_for
from devenv.postgres import PostgresServer
from devenv.sns import ses_event
from emailplan.contract.cohorts import cutoff

pytestmark = [pytest.mark.kube, pytest.mark.slow]


@pytest.fixture(scope="module")
def cst(
    crd_installed: KubeCluster, postgres: PostgresServer, moto_server: MotoServer
) -> Iterator[ClockStack]:
    with clock_stack(crd_installed, postgres, moto_server, "emailplan-e2e-campaigns-") as st:
        yield st


def manifest(name: str, list_name: str, rate: float = 200, **spec: Any) -> str:
    doc = json.loads(plan_yaml(name, recipients_cm=list_name, rate=rate, per_pod_rate=rate / 2))
    doc["spec"].update(spec)
    return json.dumps(doc)


def reasons(st: Stack, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in st.events(ns, name)]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == kind)


def bucket_of(st: Stack, uid: str) -> dict[str, int]:
    rows = st.psql(f"SELECT email || ' ' || bucket FROM messages WHERE plan_id = '{uid}'")
    return {e: int(b) for e, b in (line.split(" ") for line in rows)}


# --- tests ------------------------------------------------------------------------------------------


def test_ab_test_picks_the_variant_people_open_and_sends_it_to_the_rest(
    cst: ClockStack, namespace: str
) -> None:
    marker = f"{namespace}-ab"
    emails = [f"{marker}{i}@example.com" for i in range(1000)]
    apply_list(cst, namespace, "list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    variants = [{"name": "plain"}, {"name": "bold", "subject": "BOLD news for {{ name }}"}]
    ab = {"testPercent": 20, "metric": "uniqueOpens", "decideAfter": "1h", "minSample": 50}
    cst.kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("ab", "list", variants=variants, abTest=ab)
    )

    # The cohort goes out, then the plan holds until decideAfter: nobody outside it got mail.
    status = cst.wait_status(
        namespace,
        "ab",
        lambda s: s.get("phase") == "Holding" and s.get("abTest", {}).get("cohortFinishedAt"),
        "A/B cohort sent",
    )
    uid = cst.plan(namespace, "ab")["metadata"]["uid"]  # type: ignore[index]
    buckets = bucket_of(cst, uid)
    cohort = {e for e, b in buckets.items() if b < cutoff(20)}
    expected = {name: {e for e in cohort if buckets[e] % 2 == i} for i, name in enumerate(("plain", "bold"))}
    sent = mails(cst, marker)
    assert {addressee(m) for m in sent} == cohort and len(sent) == len(cohort)
    assert status["replicas"] == 0 and not status["abTest"].get("winner")
    for msg in sent:
        assert {addressee(msg)} <= expected[str(msg["X-EmailPlan-Variant"])]

    # People open "bold" far more: every bold email, one plain email in four. They open later
    # than the data plane's machine-open window (a hit that soon after the send is a proxy's).
    time.sleep(MACHINE_OPEN_WINDOW + 1.0)
    opened: Counter[str] = Counter()
    for i, msg in enumerate(sorted(sent, key=addressee)):
        variant = str(msg["X-EmailPlan-Variant"])
        if variant == "bold" or i % 4 == 0:
            open_pixel(msg)
            opened[variant] += 1

    def counts_shown(s: dict[str, Any]) -> bool:
        rows = {v["name"]: v for v in s.get("abTest", {}).get("variants", [])}
        return all(rows.get(n, {}).get("opened") == opened[n] for n in ("plain", "bold"))

    status = cst.wait_status(namespace, "ab", counts_shown, "opens counted per variant")
    assert status["phase"] == "Holding" and not status["abTest"].get("winner")  # decideAfter not reached

    cst.advance(3600 + 60)  # an hour later, by the operator's clock
    status = cst.wait_status(namespace, "ab", done, "A/B plan completed with the winner", timeout=300)
    assert status["abTest"]["winner"] == "bold" and "best uniqueOpens" in status["abTest"]["reason"]
    rows = {v["name"]: v for v in status["abTest"]["variants"]}
    for name in ("plain", "bold"):
        assert rows[name]["recipients"] == len(expected[name]) and rows[name]["sent"] == len(expected[name])
        assert rows[name]["opened"] == opened[name]
        assert rows[name]["openRate"] == round(opened[name] / len(expected[name]), 6)
    assert status["sent"] == 1000 and status["total"] == 1000

    # Everyone got exactly one email; outside the cohort, all of them the winner.
    everything = mails(cst, marker)
    assert Counter(addressee(m) for m in everything) == Counter(emails)
    rest = [m for m in everything if addressee(m) not in cohort]
    assert rest and all(str(m["X-EmailPlan-Variant"]) == "bold" for m in rest)
    assert all(str(m["Subject"]).startswith("BOLD news for") for m in rest)
    wait_for(lambda: "WinnerChosen" in reasons(cst, namespace, "ab"), 60, "Event WinnerChosen")
    wide = cst.kubectl("get", "eplan", "ab", "-n", namespace, "-o", "wide").splitlines()
    assert dict(zip(wide[0].split(), wide[1].split(), strict=False))["WINNER"] == "bold"


def test_rollout_gate_pauses_at_the_first_step_and_continues_when_raised(
    cst: ClockStack, namespace: str
) -> None:
    marker = f"{namespace}-ro"
    emails = [f"{marker}{i}@example.com" for i in range(400)]
    apply_list(cst, namespace, "list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    rollout = {"steps": [{"percent": 10, "hold": "10m"}, {"percent": 100}], "maxBounceRate": 0.05}
    cst.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("ro", "list", rollout=rollout))

    status = cst.wait_status(
        namespace,
        "ro",
        lambda s: s.get("rollout", {}).get("state") == "Holding",
        "first step handled, holding",
    )
    assert status["phase"] == "Holding" and status["replicas"] == 0
    uid = cst.plan(namespace, "ro")["metadata"]["uid"]  # type: ignore[index]
    step = {e for e, b in bucket_of(cst, uid).items() if b < cutoff(10)}
    assert {addressee(m) for m in mails(cst, marker)} == step

    # A quarter of the first step bounces, the rest is delivered (SES events, signed as SNS signs them).
    rows = cst.psql(
        "SELECT email || ' ' || ses_message_id FROM messages "
        f"WHERE plan_id = '{uid}' AND status = 'sent' ORDER BY id"
    )
    assert len(rows) == len(step)
    bounced = len(rows) // 4
    for i, (addr, ses_id) in enumerate(line.split(" ", 1) for line in rows):
        kind = "Bounce" if i < bounced else "Delivery"
        assert cst.post_sns(cst.ses_notification(ses_event(kind, ses_id, [addr])))["status"] == "recorded"
    cst.wait_status(
        namespace,
        "ro",
        lambda s: s.get("bounced") == bounced and s.get("delivered") == len(rows) - bounced,
        "bounces and deliveries counted",
    )

    cst.advance(600 + 30)  # the hold is over
    status = cst.wait_status(namespace, "ro", lambda s: s.get("phase") == "Suspended", "gate failed")
    suspended = condition(status, "Suspended")
    assert suspended["reason"] == "RolloutGateFailed" and "bounce rate" in suspended["message"]
    assert condition(status, "Stalled")["status"] == "True"
    assert status["rollout"]["step"] == 1 and status["rollout"]["percent"] == 10
    wait_for(
        lambda: "RolloutGateFailed" in reasons(cst, namespace, "ro"), 60, "Warning Event RolloutGateFailed"
    )
    wait_for(lambda: cst.running(namespace, "ro") == 0, 90, "no sender process")
    # Nothing beyond the step was sent, or even queued.
    beyond = cst.psql(
        f"SELECT count(*) FROM messages WHERE plan_id = '{uid}' "
        f"AND bucket >= {cutoff(10)} AND status <> 'created'"
    )
    assert beyond == ["0"]
    assert {addressee(m) for m in mails(cst, marker)} == step

    # The owner accepts a 25 % bounce rate: the rollout continues to 100 % and completes.
    patch = {"spec": {"rollout": {**rollout, "maxBounceRate": 0.5}}}
    cst.kubectl("patch", "eplan", "ro", "-n", namespace, "--type", "merge", "-p", json.dumps(patch))
    status = cst.wait_status(
        namespace, "ro", done, "rollout completed after the threshold was raised", timeout=300
    )
    assert status["rollout"]["step"] == 2 and status["sent"] == 400
    assert Counter(addressee(m) for m in mails(cst, marker)) == Counter(emails)
    assert "RolloutStepStarted" in reasons(cst, namespace, "ro")


def test_window_closes_mid_send_and_resumes_when_it_opens(cst: ClockStack, namespace: str) -> None:
    marker = f"{namespace}-win"
    emails = [f"{marker}{i}@example.com" for i in range(600)]
    apply_list(cst, namespace, "list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    now = cst.operator_now()
    opens, closes = now - timedelta(hours=1), now + timedelta(hours=1)
    window = {"from": f"{opens:%H:%M}", "to": f"{closes:%H:%M}", "timeZone": "UTC"}
    cst.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=manifest("win", "list", rate=20, schedule={"window": window}),
    )
    cst.wait_status(namespace, "win", lambda s: s.get("sent", 0) >= 40, "sending inside the window")

    cst.advance((closes - now).total_seconds() + 60)  # past the closing minute
    status = cst.wait_status(
        namespace,
        "win",
        lambda s: s.get("phase") == "Scheduled" and s.get("replicas") == 0,
        "paused outside the window",
    )
    in_window = condition(status, "InSendWindow")
    assert in_window["status"] == "False" and "opens at" in in_window["message"]
    wait_for(lambda: cst.running(namespace, "win") == 0, 90, "no sender process outside the window")
    uid = cst.plan(namespace, "win")["metadata"]["uid"]  # type: ignore[index]
    paused_at = cst.counts_from_api(uid)["sent"]
    assert 0 < paused_at < 600 and len(mails(cst, marker)) == paused_at  # sending stopped mid-list
    assert "WindowClosed" in reasons(cst, namespace, "win")

    cst.advance(23 * 3600)  # the same hour tomorrow: inside the window again
    status = cst.wait_status(namespace, "win", done, "completed after the window opened", timeout=300)
    assert condition(status, "InSendWindow")["status"] == "True"
    assert Counter(addressee(m) for m in mails(cst, marker)) == Counter(emails)  # each once
    assert "WindowOpened" in reasons(cst, namespace, "win")


def test_unknown_time_zone_and_broken_variant_are_refused_naming_the_field(
    cst: ClockStack, namespace: str
) -> None:
    """What the schema cannot check: the operator says Valid=False, names each field, sends nothing."""
    apply_list(cst, namespace, "list", [f"{namespace}-bad{i}@example.com,R{i},Rome" for i in range(5)])
    spec = {
        "variants": [{"name": "plain"}, {"name": "typo", "subject": "Hi {{ nmae }}"}],
        "schedule": {"window": {"from": "09:00", "to": "17:00", "timeZone": "Mars/Olympus"}},
    }
    cst.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("bad", "list", **spec))
    status = cst.wait_status(
        namespace, "bad", lambda s: s.get("phase") == "Failed", "refused by the operator"
    )
    valid = condition(status, "Valid")
    assert valid["status"] == "False"
    assert "variants[1] (typo).subject: 'nmae' is undefined" in valid["message"]
    assert "schedule.window.timeZone: 'Mars/Olympus' is not an IANA time zone" in valid["message"]
    assert cst.deployment(namespace, "bad") is None and not mails(cst, f"{namespace}-bad")

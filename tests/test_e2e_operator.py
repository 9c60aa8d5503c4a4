"""End to end: kubectl apply an EmailPlan, and real parts send it.

Real kube-apiserver + controller-manager (owner GC), PostgreSQL, moto (SES/SQS),
the real ``emailplan api`` process, the real operator process, and the local pod
runner that runs the sender Deployments as real ``emailplan worker`` processes.
Assertions are on what users see: ``kubectl get emailplans`` status, Events,
Deployments, and the emails moto received.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from support.e2e import API_KEY, Stack, apply_list, done, plan_yaml

from devenv.ports import wait_for
from devenv.postgres import PostgresServer

pytestmark = [pytest.mark.kube, pytest.mark.slow]


# --- tests ------------------------------------------------------------------------------------------


def test_plan_completes_with_exact_counts(stack: Stack, namespace: str, postgres: PostgresServer) -> None:
    marker = f"{namespace}-ok"
    valid = [f"{marker}{i}@example.com" for i in range(1950)]
    invalid = [f"broken{i}-at-example.com" for i in range(30)]
    suppressed = valid[:20]
    stack.suppress(suppressed)
    rows = [f"{e},Reader {i},Oslo" for i, e in enumerate(valid)] + [f"{e},Bad,Lima" for e in invalid]
    apply_list(stack, namespace, "list", rows)
    stack.kubectl(
        "apply", "-n", namespace, "-f", "-", input=plan_yaml("launch", recipients_cm="list", rate=800)
    )

    status = stack.wait_status(namespace, "launch", done, "plan Completed")
    expected = set(valid) - set(suppressed)
    assert status["sent"] == len(expected)
    assert status["suppressed"] == len(suppressed)
    assert status["failed"] == 0 and status["stopped"] == 0
    assert status["total"] == status["sent"] + status["suppressed"] + status["failed"]
    assert status["progress"] == "100%" and status["replicas"] == 0 and status.get("completedAt")
    got = stack.received(marker)
    assert set(got) == expected
    assert max(got.values()) == 1, "an email was sent twice"
    # `kubectl get emailplans` is the dashboard: the printer columns show the counts.
    table = stack.kubectl("get", "emailplans.emailplan.io", "launch", "-n", namespace)
    assert "Completed" in table and str(len(expected)) in table and "100%" in table
    reasons = {e["reason"] for e in stack.events(namespace, "launch")}
    assert "RecipientsLoaded" in reasons


def test_suspend_and_resume_without_duplicates(stack: Stack, namespace: str) -> None:
    marker = f"{namespace}-sr"
    emails = [f"{marker}{i}@example.com" for i in range(600)]
    apply_list(stack, namespace, "list", [f"{e},R{i},Pune" for i, e in enumerate(emails)])
    stack.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=plan_yaml("paced", recipients_cm="list", rate=30, per_pod_rate=15),
    )
    stack.wait_status(namespace, "paced", lambda s: s.get("sent", 0) >= 30, "first emails sent")

    stack.kubectl(
        "patch",
        "emailplans.emailplan.io",
        "paced",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )
    stack.wait_status(
        namespace,
        "paced",
        lambda s: s.get("phase") == "Suspended" and s.get("replicas") == 0,
        "Suspended with 0 replicas",
    )
    wait_for(lambda: stack.running(namespace, "paced") == 0, 90, "sender processes stopped")
    dep = stack.deployment(namespace, "paced")
    assert dep is not None and dep["spec"]["replicas"] == 0
    at_pause = sum(stack.received(marker).values())
    time.sleep(3)  # with no sender process left, nothing can be sent: the count must not move
    assert sum(stack.received(marker).values()) == at_pause
    assert at_pause < len(emails)

    stack.kubectl(
        "patch",
        "emailplans.emailplan.io",
        "paced",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"suspend":false,"rate":{"perSecond":400},"senders":{"perPodRate":200}}}',
    )
    status = stack.wait_status(namespace, "paced", done, "Completed after resume")
    got = stack.received(marker)
    assert set(got) == set(emails) and max(got.values()) == 1
    assert status["sent"] == len(emails)


def test_delete_mid_way_stops_the_rest(stack: Stack, namespace: str) -> None:
    marker = f"{namespace}-del"
    emails = [f"{marker}{i}@example.com" for i in range(600)]
    apply_list(stack, namespace, "list", [f"{e},R{i},Kyiv" for i, e in enumerate(emails)])
    stack.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=plan_yaml("doomed", recipients_cm="list", rate=20, per_pod_rate=20),
    )
    status = stack.wait_status(namespace, "doomed", lambda s: s.get("sent", 0) >= 20, "first emails sent")
    uid = stack.plan(namespace, "doomed")["metadata"]["uid"]  # type: ignore[index]
    assert status["replicas"] >= 1 and stack.deployment(namespace, "doomed") is not None

    stack.kubectl("delete", "emailplans.emailplan.io", "doomed", "-n", namespace, "--timeout=120s")
    assert stack.plan(namespace, "doomed") is None
    wait_for(lambda: stack.deployment(namespace, "doomed") is None, 120, "Deployment garbage-collected")
    # The runner lists a process until it has exited, so this waits for the workers' shutdown
    # (sends in flight finished, results flushed, held messages released as stopped).
    wait_for(lambda: stack.running(namespace, "doomed") == 0, 120, "sender processes gone")

    def settled() -> bool:
        c = stack.counts_from_api(uid)
        return c["created"] == 0 and c.get("processing", 0) == 0

    wait_for(settled, 60, "no message left created or processing")
    counts = stack.counts_from_api(uid)
    assert counts["stopped"] > 0
    assert counts["created"] == 0 and counts.get("processing", 0) == 0
    assert (
        counts["sent"] + counts["failed"] + counts["stopped"] + counts["suppressed"] == counts["total"] == 600
    )
    got = stack.received(marker)
    assert sum(got.values()) == counts["sent"] and max(got.values()) == 1


def test_future_start_is_scheduled_with_no_pods(stack: Stack, namespace: str) -> None:
    marker = f"{namespace}-later"
    start = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    inline = [
        {"email": f"{marker}{i}@example.com", "name": f"N{i}", "vars": {"city": "Oslo"}} for i in range(5)
    ]
    stack.kubectl(
        "apply", "-n", namespace, "-f", "-", input=plan_yaml("later", inline=inline, start_at=start)
    )
    status = stack.wait_status(namespace, "later", lambda s: s.get("phase") == "Scheduled", "Scheduled")
    assert status["total"] == 5 and status["replicas"] == 0 and status["sent"] == 0
    dep = stack.deployment(namespace, "later")
    assert dep is None or dep["spec"]["replicas"] == 0
    assert stack.running(namespace, "later") == 0
    assert not stack.received(marker)


def test_operator_restart_mid_plan_no_duplicates(stack: Stack, namespace: str) -> None:
    marker = f"{namespace}-rs"
    emails = [f"{marker}{i}@example.com" for i in range(600)]
    apply_list(stack, namespace, "list", [f"{e},R{i},Lima" for i, e in enumerate(emails)])
    stack.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=plan_yaml("sturdy", recipients_cm="list", rate=40, per_pod_rate=20),
    )
    stack.wait_status(namespace, "sturdy", lambda s: s.get("sent", 0) >= 20, "first emails sent")
    stack.kill_operator()
    stack.start_operator()
    status = stack.wait_status(namespace, "sturdy", done, "Completed after operator restart")
    assert status["total"] == len(emails) and status["sent"] == len(emails)
    got = stack.received(marker)
    assert set(got) == set(emails) and max(got.values()) == 1
    loaded_events = [e for e in stack.events(namespace, "sturdy") if e["reason"] == "RecipientsLoaded"]
    assert sum(int(e.get("count") or 1) for e in loaded_events) == 1, "the list was uploaded twice"


def test_invalid_plan_gets_condition_and_event_and_no_deployment(stack: Stack, namespace: str) -> None:
    inline = [{"email": "someone@example.com", "name": "S"}]
    stack.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=plan_yaml("broken", inline=inline, subject="Hello {{ nmae }}"),
    )
    status = stack.wait_status(namespace, "broken", lambda s: s.get("phase") == "Failed", "Failed")
    valid = next(c for c in status["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "False" and "nmae" in valid["message"]
    wait_for(
        lambda: any(
            e["type"] == "Warning" and "nmae" in e["message"] for e in stack.events(namespace, "broken")
        ),
        60,
        "Warning event",
    )
    assert stack.deployment(namespace, "broken") is None
    uid = stack.plan(namespace, "broken")["metadata"]["uid"]  # type: ignore[index]
    req = urllib.request.Request(f"{stack.api_url}/v1/plans/{uid}", headers={"x-api-key": API_KEY})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 404  # nothing registered


def test_plan_created_suspended_sends_everything_once_after_resume(stack: Stack, namespace: str) -> None:
    """Issue 9 #1: create paused, review, release: nothing is sent before, everyone once after."""
    marker = f"{namespace}-cs"
    emails = [f"{marker}{i}@example.com" for i in range(60)]
    inline = [{"email": e, "name": f"N{i}", "vars": {"city": "Oslo"}} for i, e in enumerate(emails)]
    manifest = json.loads(plan_yaml("held", inline=inline, rate=200, per_pod_rate=200))
    manifest["spec"]["suspend"] = True
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    status = stack.wait_status(
        namespace,
        "held",
        lambda s: s.get("phase") == "Suspended" and s.get("total") == len(emails),
        "Suspended with the list loaded",
    )
    assert status["sent"] == 0 and status["replicas"] == 0
    suspended = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "True"
    time.sleep(3)  # a suspended plan stays suspended: it must not turn Completed with nothing sent
    assert stack.status(namespace, "held")["phase"] == "Suspended"
    assert not stack.received(marker)

    stack.kubectl(
        "patch", "emailplans.emailplan.io", "held", "-n", namespace, "--type", "merge",
        "-p", '{"spec":{"suspend":false}}',
    )  # fmt: skip
    status = stack.wait_status(namespace, "held", done, "Completed after resume")
    assert status["sent"] == len(emails)
    got = stack.received(marker)
    assert set(got) == set(emails) and max(got.values()) == 1
    reasons = [e["reason"] for e in stack.events(namespace, "held")]
    assert "Suspended" in reasons and "Resumed" in reasons
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "True"
    assert all(c.get("observedGeneration") == stack.plan(namespace, "held")["metadata"]["generation"]  # type: ignore[index]
               for c in status["conditions"])  # fmt: skip
    waited = stack.kube.kubectl(
        "wait", "--for=condition=Complete", "--timeout=30s", "emailplans.emailplan.io/held", "-n", namespace
    )
    assert waited.returncode == 0

"""More end to end operator tests: the reputation breaker, S3 lists and two peered operator replicas.

Same real parts as ``test_e2e_operator`` (its ``Stack``): kube-apiserver, PostgreSQL,
moto, ``emailplan api``, the pod runner with real ``emailplan worker`` processes and the
real operator. SES bounce notifications are signed like SNS signs them (a test key,
its certificate served over local HTTPS), and the API trusts that server only through
its test settings, exactly as in ``test_api_sns``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from support.e2e import API_KEY, VENV_BIN, Stack, apply_list, done, plan_yaml

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import wait_for
from devenv.postgres import PostgresServer
from devenv.procs import spawn, stop
from devenv.sns import ses_event
from devenv.stack import StackOptions

pytestmark = [pytest.mark.kube, pytest.mark.slow]

PEERING = "emailplan-e2e"
PEERING_LIFETIME = 12  # seconds a SIGKILLed replica still counts as alive


class MoreStack(Stack):
    def start_peered(self, name: str, priority: int) -> subprocess.Popen[bytes]:
        env = self.operator_env(
            EMAILPLAN_PRIORITY=str(priority),
            EMAILPLAN_PEERING_LIFETIME_SECONDS=str(PEERING_LIFETIME),
        )
        return spawn(
            [str(VENV_BIN / "emailplan"), "operator", f"--peering={PEERING}"],
            self.base / f"{name}.log",
            env=env,
        )


@pytest.fixture(scope="module")
def more(
    crd_installed: KubeCluster, postgres: PostgresServer, moto_server: MotoServer
) -> Iterator[MoreStack]:
    base = Path(tempfile.mkdtemp(prefix="emailplan-e2e-more-"))
    st = MoreStack(
        base, StackOptions(api_key=API_KEY), postgres=postgres, moto=moto_server, kube=crd_installed
    )
    st.start()
    try:
        yield st
    finally:
        st.stop()
        print(f"e2e logs kept in {base}")


def _spec_patch(st: Stack, ns: str, name: str, patch: dict[str, Any]) -> None:
    st.kubectl("patch", "emailplans.emailplan.io", name, "-n", ns, "--type", "merge", "-p", json.dumps(patch))


# --- tests ------------------------------------------------------------------------------------------


def test_bounces_trip_the_breaker_and_pause_the_plan(more: MoreStack, namespace: str) -> None:
    marker = f"{namespace}-bb"
    emails = [f"{marker}{i}@example.com" for i in range(400)]
    apply_list(more, namespace, "list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    manifest = json.loads(plan_yaml("risky", recipients_cm="list", rate=10, per_pod_rate=10))
    manifest["spec"]["safety"] = {"maxBounceRate": 0.1, "minSample": 20}
    more.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    more.wait_status(namespace, "risky", lambda s: s.get("sent", 0) >= 30, "first emails sent")
    uid = more.plan(namespace, "risky")["metadata"]["uid"]  # type: ignore[index]

    # The SES message ids the workers stored for sent messages (what SES events carry).
    rows = more.psql(
        "SELECT email || ' ' || ses_message_id FROM messages "
        f"WHERE plan_id = '{uid}' AND status = 'sent' AND ses_message_id IS NOT NULL "
        "ORDER BY id LIMIT 25"
    )
    sent = dict(line.split(" ", 1) for line in rows)
    assert len(sent) == 25, rows
    for addr, ses_id in sent.items():
        doc = more.ses_notification(ses_event("Bounce", ses_id, [addr]))
        assert more.post_sns(doc)["status"] == "recorded"

    status = more.wait_status(
        namespace,
        "risky",
        lambda s: s.get("phase") == "Suspended" and s.get("replicas") == 0 and s.get("bounced", 0) >= 25,
        "Suspended by the breaker with 0 replicas",
    )
    suspended = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "True" and suspended["reason"] == "BounceRateExceeded"
    assert "bounce rate" in suspended["message"]
    wait_for(
        lambda: any(
            e["type"] == "Warning" and e["reason"] == "BounceRateExceeded" and "bounce rate" in e["message"]
            for e in more.events(namespace, "risky")
        ),
        60,
        "Warning event BounceRateExceeded",
    )
    wait_for(lambda: more.running(namespace, "risky") == 0, 90, "sender processes stopped")
    dep = more.deployment(namespace, "risky")
    assert dep is not None and dep["spec"]["replicas"] == 0
    at_pause = sum(more.received(marker).values())
    sent_at_pause = more.counts_from_api(uid)["sent"]
    time.sleep(3)  # with no sender process left, nothing can be sent: the counts must not move
    assert sum(more.received(marker).values()) == at_pause
    assert more.counts_from_api(uid)["sent"] == sent_at_pause
    assert at_pause < len(emails)
    assert more.status(namespace, "risky")["phase"] == "Suspended"

    # Hard bounces are suppressed for good: no plan sends to these addresses again.
    addrs = ",".join(f"'{a}'" for a in sent)
    assert set(more.psql(f"SELECT email FROM suppressions WHERE email IN ({addrs})")) == set(sent)


def test_s3_list_completes_with_exact_counts(more: MoreStack, namespace: str) -> None:
    marker = f"{namespace}-s3"
    emails = [f"{marker}{i}@example.com" for i in range(300)]
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=more.moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket)
    body = "".join(
        json.dumps({"email": e, "name": f"R{i}", "vars": {"city": "Quito"}}) + "\n"
        for i, e in enumerate(emails)
    )
    s3.put_object(Bucket=bucket, Key="lists/audience.jsonl", Body=body.encode())
    manifest = json.loads(plan_yaml("bucketed", inline=[{"email": "x@example.com"}], rate=300))
    manifest["spec"]["recipients"] = {
        "s3": {"bucket": bucket, "key": "lists/audience.jsonl", "format": "jsonl"}
    }
    more.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    status = more.wait_status(namespace, "bucketed", done, "plan from S3 Completed")
    assert status["total"] == len(emails) and status["sent"] == len(emails)
    assert status["failed"] == 0 and status["suppressed"] == 0 and status["stopped"] == 0
    assert status["recipientsLoaded"] is True and status["progress"] == "100%"
    got = more.received(marker)
    assert set(got) == set(emails) and max(got.values()) == 1
    reasons = {e["reason"] for e in more.events(namespace, "bucketed")}
    assert "LoadingRecipients" in reasons


def _registered(log: Path, plan: str) -> bool:
    if not log.exists():
        return False
    for line in log.read_text(errors="replace").splitlines():
        if '"plan registered"' in line and f'"{plan}"' in line:
            return True
    return False


def test_two_peered_operators_one_works_and_the_other_takes_over(
    more: MoreStack, namespace: str, repo_root: str
) -> None:
    more.kubectl("apply", "-f", os.path.join(repo_root, "charts", "emailplan", "crds", "kopf-peering.yaml"))
    more.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")
    # kopf never creates the peering object: the chart does (templates/operator-peering.yaml).
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}}
    more.kubectl("apply", "-f", "-", input=json.dumps(peering))

    stop(more.operator)  # the module's standalone operator ignores peering: only the pair runs now
    more.operator = None
    high = more.start_peered("operator-high", 200)
    low: subprocess.Popen[bytes] | None = None
    try:
        # The pair is up when both appear in the peering object's status.
        def peers() -> int:
            out = more.kubectl("get", "clusterkopfpeering", PEERING, "-o", "json")
            return len(json.loads(out).get("status") or {})

        wait_for(lambda: peers() >= 1, 90, "the first operator in the peering")
        low = more.start_peered("operator-low", 100)
        wait_for(lambda: peers() >= 2, 90, "both operators in the peering")
        # kopf starts a peered operator paused and resumes it only when no peer outranks it,
        # so the low-priority one never works while the high-priority one is alive.

        marker = f"{namespace}-pp"
        emails = [f"{marker}{i}@example.com" for i in range(500)]
        apply_list(more, namespace, "list", [f"{e},R{i},Baku" for i, e in enumerate(emails)])
        more.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=plan_yaml("paired", recipients_cm="list", rate=20, per_pod_rate=20),
        )
        more.wait_status(namespace, "paired", lambda s: s.get("sent", 0) >= 20, "first emails sent")
        assert _registered(more.base / "operator-high.log", "paired")
        assert not _registered(more.base / "operator-low.log", "paired"), "the paused replica worked too"

        os.killpg(high.pid, signal.SIGKILL)  # no goodbye: the standby must notice the silence
        high.wait(10)
        wait_for(
            lambda: _registered(more.base / "operator-low.log", "paired"),
            PEERING_LIFETIME * 10,
            "the standby takes over the plan",
        )
        status = more.wait_status(namespace, "paired", done, "Completed after the takeover")
        assert status["total"] == len(emails) and status["sent"] == len(emails)

        # A plan applied after the takeover is handled by the survivor.
        late = [f"{marker}-late{i}@example.com" for i in range(40)]
        inline = [{"email": e, "name": f"L{i}", "vars": {"city": "Baku"}} for i, e in enumerate(late)]
        more.kubectl("apply", "-n", namespace, "-f", "-", input=plan_yaml("after", inline=inline))
        status = more.wait_status(namespace, "after", done, "plan applied after the takeover Completed")
        assert status["sent"] == len(late)

        got = more.received(marker)
        assert set(got) == set(emails) | set(late) and max(got.values()) == 1, "an email was sent twice"
        loaded = [e for e in more.events(namespace, "paired") if e["reason"] == "RecipientsLoaded"]
        assert sum(int(e.get("count") or 1) for e in loaded) == 1, "the list was uploaded twice"
    finally:
        stop(low)
        stop(high)
        more.start_operator()


def _s3(more: MoreStack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=more.moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def test_s3_missing_object_reports_load_failed_then_completes_when_uploaded(
    more: MoreStack, namespace: str
) -> None:
    """Issue 9 #2-#5, issue 20 #3: a missing list fails the plan (not retried forever); fixed and
    re-applied, it loads; bad rows are reported by row number."""
    marker = f"{namespace}-miss"
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3 = _s3(more)
    s3.create_bucket(Bucket=bucket)
    manifest = json.loads(plan_yaml("later-list", inline=[{"email": "x@example.com"}], rate=300))
    manifest["spec"]["text"] = "Hi {{ name }}"
    manifest["spec"]["html"] = "<p>Hi {{ name }}</p>"
    manifest["spec"]["recipients"] = {"s3": {"bucket": bucket, "key": "lists/late.csv", "format": "csv"}}
    more.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    status = more.wait_status(
        namespace,
        "later-list",
        lambda s: _condition(s, "LoadFailed").get("status") == "True",
        "LoadFailed condition",
        timeout=60,
    )
    failed = _condition(status, "LoadFailed")
    assert failed["reason"] == "ObjectMissing" and "lists/late.csv" in failed["message"]
    assert status["phase"] == "Failed" and status.get("sent", 0) == 0
    assert _condition(status, "Stalled")["reason"] == "ObjectMissing" and "change the" in status["message"]
    wait_for(
        lambda: any(
            e["type"] == "Warning" and e["reason"] == "LoadFailed"
            for e in more.events(namespace, "later-list")
        ),
        60,
        "Warning event LoadFailed",
    )

    # The list a spreadsheet exports: BOM, CRLF, quoted header, a note with a line break inside quotes.
    good = [f"{marker}{i}@example.com" for i in range(40)]
    lines = ['"Email","Name","Note"']
    lines.append(f'{good[0]},Ann,"two\nlines"')  # row 1 holds a newline: still one record
    lines += [f"{e},R{i},x" for i, e in enumerate(good[1:], start=1)]  # rows 2-40
    bad_rows = list(range(41, 48))
    lines += [f"broken{n}-at-example.com,Bad,x" for n in bad_rows]  # rows 41-47: seven bad addresses
    lines += [f"{good[n].upper()},Again,x" for n in range(3)]  # rows 48-50: duplicates, not errors
    body = "\ufeff" + "\r\n".join(lines) + "\r\n"
    s3.put_object(Bucket=bucket, Key="lists/late.csv", Body=body.encode())
    assert more.status(namespace, "later-list")["phase"] == "Failed"  # not retried by itself
    _spec_patch(more, namespace, "later-list", {"spec": {"rate": {"perSecond": 299}}})  # the owner re-applies

    status = more.wait_status(namespace, "later-list", done, "Completed once the object exists")
    assert status["sent"] == len(good) and status["total"] == len(good)
    assert _condition(status, "LoadFailed").get("status") == "False"
    loaded = _condition(status, "RecipientsLoaded")
    assert loaded["status"] == "True"
    for words in (f"{len(good)} accepted", "7 rejected", "3 duplicates"):
        assert words in loaded["message"], loaded["message"]
    got = more.received(marker)
    assert set(got) == set(good) and max(got.values()) == 1
    events = more.events(namespace, "later-list")
    rejected = [e["message"] for e in events if e["reason"] == "RecipientsRejected"]
    assert len(rejected) == 1, rejected
    for n in bad_rows:  # every bad row by its record number, none of the duplicates among them
        assert f"row {n}:" in rejected[0], rejected
    for n in (48, 49, 50):
        assert f"row {n}" not in rejected[0]

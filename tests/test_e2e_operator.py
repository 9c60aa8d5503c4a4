"""End to end: kubectl apply an EmailPlan, and real parts send it.

Real kube-apiserver + controller-manager (owner GC), PostgreSQL, moto (SES/SQS),
the real ``emailplan api`` process, the real operator process, and the local pod
runner that runs the sender Deployments as real ``emailplan worker`` processes.
Assertions are on what users see: ``kubectl get emailplans`` status, Events,
Deployments, and the emails moto received.
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import free_port, port_open, wait_for
from devenv.postgres import PostgresServer, pg_bin
from devenv.procs import spawn, stop
from devenv.runner import PodRunner

pytestmark = [pytest.mark.kube, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
API_KEY = "e2e-api-key-" + uuid.uuid4().hex[:8]
TIMEOUT = 240.0


class Stack:
    """The running parts, with helpers to look at them like a user would."""

    def __init__(self, kube: KubeCluster, moto: MotoServer, database_url: str, base: Path) -> None:
        self.kube = kube
        self.moto = moto
        self.database_url = database_url
        self.base = base
        self.api_port = free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.runner: PodRunner | None = None
        self.data_env = {
            **moto.env(),
            "EMAILPLAN_DATABASE_URL": database_url,
            "EMAILPLAN_API_KEY": API_KEY,
            "EMAILPLAN_TOKEN_KEY": "e2e-token-key",
            "EMAILPLAN_PUBLIC_URL": f"http://127.0.0.1:{self.api_port}",
            "EMAILPLAN_METRICS_PORT": "0",
            "EMAILPLAN_FLUSH_SECONDS": "1",
            # moto's GetSendQuota answers the sandbox rate (1/s): give the account a real cap.
            "EMAILPLAN_MAX_SEND_RATE": "2000",
            "EMAILPLAN_LOG_LEVEL": "INFO",
        }

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self) -> None:
        env = {**os.environ, **self.data_env}
        self.api = spawn(
            [str(VENV_BIN / "emailplan"), "api", "--host", "127.0.0.1", "--port", str(self.api_port)],
            self.base / "api.log",
            env=env,
        )
        wait_for(lambda: self._alive(self.api, "api.log") and port_open(self.api_port), 60, "emailplan api")

    def start_operator(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kube.kubeconfig),
            "EMAILPLAN_API_URL": self.api_url,
            "EMAILPLAN_API_KEY": API_KEY,
            "EMAILPLAN_STATUS_INTERVAL_SECONDS": "1",
            "EMAILPLAN_METRICS_PORT": "0",
            "EMAILPLAN_SENDER_IMAGE": "emailplan:e2e",
        }
        self.operator = spawn(
            [str(VENV_BIN / "emailplan"), "operator", "--standalone"], self.base / "operator.log", env=env
        )

    def kill_operator(self) -> None:
        """SIGKILL: no graceful shutdown, like a node dying."""
        assert self.operator is not None
        os.killpg(self.operator.pid, signal.SIGKILL)
        self.operator.wait(10)
        self.operator = None

    def start_runner(self) -> None:
        self.runner = PodRunner(
            self.kube.kubeconfig,
            extra_env=self.data_env,
            command_map={"emailplan": str(VENV_BIN / "emailplan")},
            log_dir=self.base / "pods",
        ).start()

    def _alive(self, proc: subprocess.Popen[bytes] | None, log: str) -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{log} process exited: {(self.base / log).read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        if self.runner:
            self.runner.stop()
        stop(self.operator)
        stop(self.api)

    # --- looking at things ----------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.kube.kubectl(*args, input=input, check=check).stdout

    def plan(self, ns: str, name: str) -> dict[str, Any] | None:
        out = self.kube.kubectl("get", "emailplans.emailplan.io", name, "-n", ns, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def status(self, ns: str, name: str) -> dict[str, Any]:
        plan = self.plan(ns, name)
        return dict((plan or {}).get("status") or {})

    def wait_status(
        self, ns: str, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(ns, name)
            if check(last):
                return last
            time.sleep(0.5)
        raise AssertionError(
            f"{what}: not reached in {timeout:.0f}s; last status {json.dumps(last)[:2000]}\n"
            f"operator log tail:\n{self._tail('operator.log')}"
        )

    def _tail(self, name: str) -> str:
        path = self.base / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        out = self.kube.kubectl(
            "get", "deployment", f"emailplan-{name}-sender", "-n", ns, "-o", "json", check=False
        )
        return json.loads(out.stdout) if out.returncode == 0 else None

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        out = self.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.kind=EmailPlan,involvedObject.name={name}",
        )
        return list(json.loads(out)["items"])

    def running(self, ns: str, name: str) -> int:
        assert self.runner is not None
        return sum(1 for p in self.runner.processes(ns, f"emailplan-{name}-sender") if p.poll() is None)

    def received(self, marker: str) -> Counter[str]:
        """Recipients (containing ``marker``) of every email moto accepted, one count per email."""
        ses = self.moto.data().get("ses", {})
        got: Counter[str] = Counter()
        for kind in ("Message", "RawMessage"):
            stored = ses.get(kind) or []
            msgs = stored if isinstance(stored, list) else [m for v in stored.values() for m in v]
            for msg in msgs:
                dests = msg.get("destinations")
                addrs = (
                    [a for v in dests.values() for a in v or []] if isinstance(dests, dict) else dests or []
                )
                # moto lists the To header ("Name <addr>") and the envelope address: count each email once.
                for addr in {email.utils.parseaddr(a)[1].lower() for a in addrs}:
                    if marker in addr:
                        got[addr] += 1
        return got

    def counts_from_api(self, uid: str) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.api_url}/v1/results/count/{uid}", headers={"x-api-key": API_KEY})
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.load(r))

    def suppress(self, emails: list[str], postgres: PostgresServer, database: str) -> None:
        values = ",".join(f"('{e.lower()}', 'manual')" for e in emails)
        subprocess.run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(postgres.port),
                "-U",
                postgres.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                f"INSERT INTO suppressions (email, reason) VALUES {values} ON CONFLICT DO NOTHING",
            ],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def stack(
    crd_installed: KubeCluster, postgres: PostgresServer, moto_server: MotoServer, repo_root: str
) -> Iterator[Stack]:
    database = "e2e_op_" + uuid.uuid4().hex[:8]
    subprocess.run(
        [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", postgres.user, database],
        check=True,
        capture_output=True,
    )
    url = f"postgresql+asyncpg://{postgres.user}@127.0.0.1:{postgres.port}/{database}"
    base = Path(tempfile.mkdtemp(prefix="emailplan-e2e-op-"))
    st = Stack(crd_installed, moto_server, url, base)
    st.database = database  # type: ignore[attr-defined]
    env = {**os.environ, **st.data_env}
    subprocess.run([str(VENV_BIN / "emailplan"), "db", "upgrade"], env=env, check=True, capture_output=True)
    _verify_sender_domain(moto_server)
    try:
        st.start_api()
        st.start_runner()
        st.start_operator()
        yield st
    finally:
        st.stop()
        print(f"e2e logs kept in {base}")


def _verify_sender_domain(moto: MotoServer) -> None:
    import boto3

    ses = boto3.client(
        "ses",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ses.verify_domain_identity(Domain="example.com")


def plan_yaml(
    name: str,
    *,
    recipients_cm: str | None = None,
    inline: list[dict[str, Any]] | None = None,
    rate: float = 500,
    max_replicas: int = 2,
    per_pod_rate: float = 250,
    start_at: str | None = None,
    subject: str = "Hello {{ name }}",
    sender: str = "Acme <news@example.com>",
) -> str:
    spec: dict[str, Any] = {
        "from": sender,
        "subject": subject,
        "text": "Hi {{ name }}, news from {{ city }}.",
        "html": "<p>Hi {{ name }}, news from {{ city }}.</p>",
        "rate": {"perSecond": rate},
        "senders": {"maxReplicas": max_replicas, "perPodRate": per_pod_rate},
        "tracking": {"opens": True, "clicks": False},
    }
    if recipients_cm:
        spec["recipients"] = {
            "configMapRef": {"name": recipients_cm, "key": "recipients.csv", "format": "csv"}
        }
    else:
        spec["recipients"] = {"inline": inline}
    if start_at:
        spec["schedule"] = {"startAt": start_at}
    return json.dumps(
        {"apiVersion": "emailplan.io/v1alpha1", "kind": "EmailPlan", "metadata": {"name": name}, "spec": spec}
    )


def apply_list(st: Stack, ns: str, name: str, rows: list[str]) -> None:
    """A ConfigMap with a csv list (``email,name,city``)."""
    csv = "email,name,city\n" + "\n".join(rows) + "\n"
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"recipients.csv": csv},
    }
    st.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(cm))


def done(s: dict[str, Any]) -> bool:
    return s.get("phase") == "Completed"


# --- tests ------------------------------------------------------------------------------------------


def test_plan_completes_with_exact_counts(stack: Stack, namespace: str, postgres: PostgresServer) -> None:
    marker = f"{namespace}-ok"
    valid = [f"{marker}{i}@example.com" for i in range(1950)]
    invalid = [f"broken{i}-at-example.com" for i in range(30)]
    suppressed = valid[:20]
    stack.suppress(suppressed, postgres, stack.database)  # type: ignore[attr-defined]
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

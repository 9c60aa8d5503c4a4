"""Issue 24 part 4 end to end: the SES account's quota and standing, as a user sees them in kubectl.

The whole stack (kube-apiserver, ``emailplan api``, real worker processes, the real
operator, moto for sends) on its own PostgreSQL, and the local SES v2 ``GetAccount`` stub
(moto does not answer it) set by the test. The quota window is shortened (development
mode only) so the oldest sends age out within the test. No timed assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.e2e import API_KEY, Stack, apply_list, done, plan_yaml, wait_event

from devenv import sesaccount
from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import free_port, port_open, wait_for
from devenv.stack import StackOptions

pytestmark = [pytest.mark.kube, pytest.mark.slow]

WINDOW = 90  # seconds: this module's "24 hours"


class StubProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, sesaccount.__file__, str(self.port)])
        try:
            wait_for(lambda: port_open(self.port), 30, "GetAccount stub")
        except BaseException:
            self.proc.kill()
            raise

    def set(self, **account: Any) -> None:
        body = json.dumps(account).encode()
        req = urllib.request.Request(f"{self.url}/_stub/account", data=body, method="PUT")
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200


@pytest.fixture(scope="module")
def stub() -> Iterator[StubProcess]:
    s = StubProcess()
    try:
        yield s
    finally:
        s.proc.terminate()
        s.proc.wait(10)


@pytest.fixture(scope="module")
def st(crd_installed: KubeCluster, moto_server: MotoServer, stub: StubProcess) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="emailplan-e2e-account-"))
    options = StackOptions(
        api_key=API_KEY,
        data_env={
            "EMAILPLAN_DEV_MODE": "true",
            "EMAILPLAN_SES_ACCOUNT_ENDPOINT_URL": stub.url,
            "EMAILPLAN_ACCOUNT_POLL_SECONDS": "1",
            "EMAILPLAN_QUOTA_WINDOW_SECONDS": str(WINDOW),
        },
    )
    stack = Stack(base, options, moto=moto_server, kube=crd_installed)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        print(f"e2e logs kept in {base}")


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _is(kind: str, value: str, reason: str) -> Any:
    def check(s: dict[str, Any]) -> bool:
        c = _condition(s, kind)
        return c.get("status") == value and c.get("reason") == reason

    return check


def _plan(st: Stack, ns: str, name: str, n: int) -> list[str]:
    emails = [f"{ns}-{name}{i}@example.com" for i in range(n)]
    apply_list(st, ns, f"{name}-list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    manifest = plan_yaml(name, recipients_cm=f"{name}-list", rate=20, per_pod_rate=20, max_replicas=1)
    st.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    return emails


def test_second_plan_waits_for_the_quota_window_then_finishes(
    st: Stack, stub: StubProcess, namespace: str
) -> None:
    stub.set(
        SendQuota={"Max24HourSend": 30.0, "MaxSendRate": 100.0, "SentLast24Hours": 0.0},
        EnforcementStatus="HEALTHY",
    )
    first = _plan(st, namespace, "first", 20)
    st.wait_status(namespace, "first", done, "first plan Completed")
    second = _plan(st, namespace, "second", 20)
    status = st.wait_status(
        namespace, "second", _is("AccountQuota", "False", "QuotaExhausted"), "QuotaExhausted"
    )
    assert _condition(status, "Ready")["status"] == "False"
    assert _condition(status, "Ready")["reason"] == "QuotaExhausted"
    assert "resumes by itself at" in status["message"] and status["phase"] == "Sending", status
    wait_event(st, namespace, "second", "Warning", "QuotaExhausted")
    status = st.wait_status(
        namespace, "second", done, "second plan Completed after the window moved", timeout=300
    )
    assert _condition(status, "AccountQuota")["status"] == "True" or status["phase"] == "Completed"
    got = st.received(namespace)
    assert set(got) == set(first) | set(second) and max(got.values()) == 1


@pytest.mark.parametrize(
    ("standing", "reason"), [("PROBATION", "AccountProbation"), ("SHUTDOWN", "AccountShutdown")]
)
def test_account_under_review_pauses_the_plan_with_a_condition_and_event(
    st: Stack, stub: StubProcess, namespace: str, standing: str, reason: str
) -> None:
    stub.set(
        SendQuota={"Max24HourSend": -1.0, "MaxSendRate": 100.0, "SentLast24Hours": 0.0},
        EnforcementStatus=standing,
    )
    emails = _plan(st, namespace, "reviewed", 10)
    status = st.wait_status(namespace, "reviewed", _is("AccountHealthy", "False", reason), reason)
    assert _condition(status, "Ready")["reason"] == reason and status.get("sent", 0) == 0
    wait_event(st, namespace, "reviewed", "Warning", reason)
    stub.set(EnforcementStatus="HEALTHY")
    st.wait_status(namespace, "reviewed", done, "Completed once SES says HEALTHY")
    wait_event(st, namespace, "reviewed", "Normal", "AccountHealthy")
    assert set(st.received(f"{namespace}-reviewed")) == set(emails)

"""Issue 20 end to end: outages of the data plane are visible in kubectl, and deletion never hangs.

The whole stack (kube-apiserver, ``emailplan api``, the pod runner with real
``emailplan worker`` processes, the real operator, moto) on a PostgreSQL of this
module's own, so stopping it hurts no other test. What counts is what a user sees
with kubectl (conditions, message, Events) and what SES (moto) received. No timed
assertions: every wait is a generous poll.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.e2e import API_KEY, Stack, apply_list, done, plan_yaml, wait_event

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import wait_for
from devenv.procs import stop
from devenv.stack import StackOptions

pytestmark = [pytest.mark.kube, pytest.mark.slow]

DELETION_TIMEOUT = 15  # seconds a deleted plan waits for the data plane in this module


@pytest.fixture(scope="module")
def st(crd_installed: KubeCluster, moto_server: MotoServer) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="emailplan-e2e-outage-"))
    options = StackOptions(
        api_key=API_KEY,
        operator_env={"EMAILPLAN_DELETION_TIMEOUT_SECONDS": str(DELETION_TIMEOUT)},
    )
    stack = Stack(base, options, moto=moto_server, kube=crd_installed)  # its own PostgreSQL
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        print(f"e2e logs kept in {base}")


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _down(reason: str) -> Any:
    def check(s: dict[str, Any]) -> bool:
        c = _condition(s, "DataPlaneAvailable")
        return c.get("status") == "False" and c.get("reason") == reason

    return check


def _sending_plan(st: Stack, ns: str, name: str, n: int) -> list[str]:
    marker = f"{ns}-{name}"
    emails = [f"{marker}{i}@example.com" for i in range(n)]
    apply_list(st, ns, f"{name}-list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    manifest = plan_yaml(name, recipients_cm=f"{name}-list", rate=15, per_pod_rate=15, max_replicas=1)
    st.kubectl("apply", "-n", ns, "-f", "-", input=manifest)
    st.wait_status(ns, name, lambda s: s.get("sent", 0) >= 20, "first emails sent")
    return emails


def _completes_exactly_once(st: Stack, ns: str, name: str, emails: list[str]) -> dict[str, Any]:
    status = st.wait_status(ns, name, done, "Completed after the outage", timeout=400)
    assert status["sent"] == len(emails) and status["total"] == len(emails), status
    got = st.received(f"{ns}-{name}")
    assert set(got) == set(emails), f"{len(set(emails) - set(got))} recipients never received a message"
    assert max(got.values()) == 1, {k: v for k, v in got.items() if v > 1}
    return status


def test_database_outage_mid_send_is_shown_and_clears(st: Stack, namespace: str) -> None:
    emails = _sending_plan(st, namespace, "dbdown", 600)
    st.postgres.stop()
    try:
        status = st.wait_status(
            namespace, "dbdown", _down("DatabaseUnavailable"), "DataPlaneAvailable=False", timeout=60
        )
    finally:
        st.postgres.restart()
    ready = _condition(status, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "DatabaseUnavailable"
    assert "database" in status["message"] and " since " in status["message"], status["message"]
    assert status["phase"] == "Sending"
    warning = wait_event(st, namespace, "dbdown", "Warning", "DatabaseUnavailable")
    assert "database" in warning["message"]

    status = _completes_exactly_once(st, namespace, "dbdown", emails)
    assert _condition(status, "DataPlaneAvailable")["status"] == "True"
    assert _condition(status, "Ready")["status"] == "True"
    recovered = wait_event(st, namespace, "dbdown", "Normal", "DataPlaneRecovered")
    assert "recovered after" in recovered["message"]
    assert len([e for e in st.events(namespace, "dbdown") if e["reason"] == "DatabaseUnavailable"]) == 1


def test_api_stopped_mid_send_is_shown_and_clears(st: Stack, namespace: str) -> None:
    emails = _sending_plan(st, namespace, "apidown", 600)
    stop(st.api)
    try:
        status = st.wait_status(
            namespace, "apidown", _down("DataPlaneUnreachable"), "DataPlaneAvailable=False", timeout=60
        )
    finally:
        st.start_api()
    assert _condition(status, "Ready")["reason"] == "DataPlaneUnreachable"
    assert "data-plane API" in status["message"] and " since " in status["message"]
    wait_event(st, namespace, "apidown", "Warning", "DataPlaneUnreachable")
    status = _completes_exactly_once(st, namespace, "apidown", emails)
    assert _condition(status, "DataPlaneAvailable")["status"] == "True"
    wait_event(st, namespace, "apidown", "Normal", "DataPlaneRecovered")


def test_deleting_a_plan_while_the_api_is_gone_releases_the_finalizer(st: Stack, namespace: str) -> None:
    apply_list(st, namespace, "orphan-list", [f"{namespace}-o@example.com,O,Rome"])
    manifest = json.loads(plan_yaml("orphan", recipients_cm="orphan-list"))
    manifest["spec"]["schedule"] = {"startAt": "2099-01-01T00:00:00Z"}  # registered, never sent
    st.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    st.wait_status(namespace, "orphan", lambda s: s.get("phase") == "Scheduled", "Scheduled")
    stop(st.api)
    try:
        st.kubectl("delete", "eplan", "orphan", "-n", namespace, "--wait=false")
        waiting = wait_event(st, namespace, "orphan", "Warning", "DeletionWaiting")
        assert "data-plane API" in waiting["message"] and "released" in waiting["message"]
        assert st.plan(namespace, "orphan") is not None  # still held while within the bound
        wait_for(lambda: st.plan(namespace, "orphan") is None, DELETION_TIMEOUT + 120, "plan deleted")
        released = wait_event(st, namespace, "orphan", "Warning", "FinalizerReleased")
        assert "0 of 1 sent" in released["message"] and "1 not sent" in released["message"]
    finally:
        st.start_api()

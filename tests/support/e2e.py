"""The e2e tests' stack and plan manifests (shared by the e2e modules; no tests here).

The stack is ``devenv.stack.LocalStack``, the launcher the demo and the benchmarks use too,
on the session's PostgreSQL, moto and control plane.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import wait_for
from devenv.postgres import PostgresServer
from devenv.stack import VENV_BIN, LocalStack, StackOptions

__all__ = ["API_KEY", "VENV_BIN", "Stack", "apply_list", "done", "plan_yaml", "start_stack"]

API_KEY = "e2e-api-key-" + uuid.uuid4().hex[:8]
Stack = LocalStack


def start_stack(kube: KubeCluster, postgres: PostgresServer, moto: MotoServer, prefix: str) -> LocalStack:
    """The API, the pod runner and the operator on the session's servers, in a fresh database."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    return LocalStack(base, StackOptions(api_key=API_KEY), postgres=postgres, moto=moto, kube=kube).start()


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


def wait_event(st: Stack, ns: str, name: str, kind: str, reason: str) -> dict[str, Any]:
    """The first Event of ``kind`` (Normal, Warning) and ``reason`` on the plan, once it appears."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in st.events(ns, name) if e["type"] == kind and e["reason"] == reason]
        return bool(found)

    wait_for(seen, 90, f"{kind} Event {reason}")
    return found[0]

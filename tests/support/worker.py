"""Helpers for tests that run real ``emailplan worker`` processes against PostgreSQL and moto.

Shared by the worker, pod and fault tests (test modules never import each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import signal
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from devenv.moto import MotoServer
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import loading, plans
from emailplan.sender.workqueue import WorkQueue

EXE = str(Path(sys.executable).with_name("emailplan"))
TOKEN_KEY = "test-token-key-0123456789"
PUBLIC = "https://mail.example.org"
SPEC = {
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "html": '<p>Hi {{ name }}, your code is {{ code }}</p><a href="https://shop.example.com/">shop</a>',
    "text": "Hi {{ name }}, your code is {{ code }}",
    "tracking": {"opens": True, "clicks": True},
}


async def make_plan(
    engine: AsyncEngine,
    emails: list[str],
    *,
    rate: float,
    spec: dict[str, Any] | None = None,
    suppressed: tuple[str, ...] = (),
) -> uuid.UUID:
    plan_id = uuid.uuid4()
    await plans.upsert_plan(
        engine, plan_id, name="t", namespace="ns", spec=spec or SPEC, rate_per_second=rate
    )
    if suppressed:
        await loading.add_suppressions(engine, list(suppressed), "complaint")
    rows = ((i, {"email": e, "name": f"N{i}", "vars": {"code": f"C{i}"}}) for i, e in enumerate(emails, 1))
    await loading.insert_recipients(engine, plan_id, rows)
    async with WorkQueue.open(SenderSettings()) as queue:
        await loading.complete_recipients(engine, plan_id, queue)
    return plan_id


def worker_env(database_url: str, plan_id: uuid.UUID, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": database_url,
        "EMAILPLAN_PLAN_ID": str(plan_id),
        "EMAILPLAN_METRICS_PORT": "0",
        "EMAILPLAN_MAX_SEND_RATE": "1000",  # moto's quota says 1/s
        "EMAILPLAN_POLL_WAIT_SECONDS": "1",
        "EMAILPLAN_EXIT_WHEN_IDLE": "true",
        "EMAILPLAN_TOKEN_KEY": TOKEN_KEY,
        "EMAILPLAN_PUBLIC_URL": PUBLIC,
        "EMAILPLAN_WORKER_CONCURRENCY": "8",
        "EMAILPLAN_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


class Workers:
    """Worker subprocesses with logs in tmp_path; all stopped at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        # Its own process group: a test can kill the whole pod (supervisor, forkserver, workers).
        proc = subprocess.Popen(
            [EXE, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("worker-*.log")))

    def stop_all(self) -> None:
        """Kill each pod's whole process group, as a node does: a supervisor killed alone would
        leave its forkserver and workers sending on (seen: orphans still running minutes later)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def wait_exit(procs: list[subprocess.Popen[bytes]], workers: Workers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline:
            raise AssertionError(f"workers did not finish in {timeout}s:\n{workers.logs()}")
        await asyncio.sleep(0.2)
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), f"exit codes {codes}:\n{workers.logs()}"


async def wait_counts(
    engine: AsyncEngine, plan_id: uuid.UUID, pred: Any, timeout: float, workers: Workers
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            counts = await plans.get_counts(engine, plan_id) or {}
        except Exception:  # database restarting
            counts = {}
        if counts and pred(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"counts {counts} not reached in {timeout}s:\n{workers.logs()}")
        await asyncio.sleep(0.2)


def raw_sent(aws: MotoServer) -> list[dict[str, Any]]:
    """Raw messages moto's SES accepted (its data.json lists them per model; one region here)."""
    stored = aws.data().get("ses", {}).get("RawMessage", [])
    return list(stored if isinstance(stored, list) else stored.values())


# Every header the sender writes in raw mode: any other header name in a sent message was
# added by user data (a header injection).
SENDER_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "mime-version",
        "x-emailplan-message-id",
        "x-emailplan-plan-id",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "content-type",
        "content-transfer-encoding",
    }
)


def received(aws: MotoServer) -> list[EmailMessage]:
    out = []
    for stored in raw_sent(aws):
        raw = stored.get("raw_data")
        assert raw, f"expected raw MIME, got {sorted(stored)}"
        msg = email.message_from_string(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def addressee(msg: EmailMessage) -> str:
    return str(msg["To"].addresses[0].addr_spec)


def emails(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


# ----------------------------------------------------------------------------- tests

"""The ``emailplan api`` process: JSON logs, and SIGTERM flushes buffered opens before exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path

from support.api import API_KEY, TOKEN_KEY

from devenv.ports import free_port, wait_for
from devenv.procs import spawn, stop
from emailplan.sender.db import make_engine
from emailplan.sender.migrate import upgrade_to
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import loading, plans
from emailplan.sender.tokens import make_token


def test_sigterm_flushes_buffered_opens(database_url: str) -> None:
    upgrade_to(database_url)

    async def setup() -> tuple[str, list[int]]:
        from sqlalchemy import text

        engine = make_engine(SenderSettings(database_url=database_url), pool_size=2)
        plan_id = uuid.uuid4()
        await plans.upsert_plan(engine, plan_id, name="p", namespace="n", spec={"subject": "s", "text": "t"})
        await loading.insert_recipients(
            engine, plan_id, [(i, {"email": f"p{i}@example.com"}) for i in range(1, 4)]
        )
        async with engine.connect() as conn:
            ids = [int(r[0]) for r in (await conn.execute(text("SELECT id FROM messages ORDER BY id"))).all()]
        await engine.dispose()
        return str(plan_id), ids

    plan_id, ids = asyncio.run(setup())
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="emailplan-api-")) / "api.log"
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": database_url,
        "EMAILPLAN_API_KEY": API_KEY,
        "EMAILPLAN_TOKEN_KEY": TOKEN_KEY,
        "EMAILPLAN_OPEN_FLUSH_SECONDS": "600",
        "EMAILPLAN_AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    proc = spawn(
        [sys.executable, "-m", "emailplan.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{base}/readyz", timeout=2).status == 200, 60, "api")
        ua = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"}
        for mid in ids[:2]:
            req = urllib.request.Request(
                f"{base}/v1/events/open?requestId={make_token(TOKEN_KEY.encode(), 'open', mid)}", headers=ua
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200
        req = urllib.request.Request(f"{base}/v1/results/count/{plan_id}", headers={"x-api-key": API_KEY})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r)["opened"] == 0  # still buffered (flush interval is 10 minutes)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop(proc)

    async def opened() -> int:
        engine = make_engine(SenderSettings(database_url=database_url), pool_size=1)
        counts = await plans.get_counts(engine, uuid.UUID(plan_id))
        await engine.dispose()
        assert counts is not None
        return counts["opened"]

    assert asyncio.run(opened()) == 2
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(rec["msg"] == "api stopped" for rec in lines)
    assert all(API_KEY not in line and TOKEN_KEY not in line for line in log.read_text().splitlines())

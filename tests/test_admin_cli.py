"""`emailplan suppressions import`, `stats` and `failures` against a real `emailplan api` process."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from devenv.kube import KubeCluster
from devenv.ports import free_port, wait_for
from devenv.postgres import PostgresServer
from devenv.procs import spawn, stop

EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")
KEY = "admin-cli-test-key"


@pytest.fixture
def api_url(migrated: str) -> Iterator[str]:
    url, proc = start_api(migrated, Path(tempfile.mkdtemp(prefix="emailplan-admin-")) / "api.log")
    try:
        yield url
    finally:
        stop(proc)


def start_api(database_url: str, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """``emailplan api`` on a free port against ``database_url``; returns (url, process)."""
    port = free_port()
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": database_url,
        "EMAILPLAN_API_KEY": KEY,
        "EMAILPLAN_AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "EMAILPLAN_METRICS_PORT": "0",
    }
    proc = spawn([EMAILPLAN, "api", "--host", "127.0.0.1", "--port", str(port)], log, env=env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)

    try:
        wait_for(ready, 60, "emailplan api")
    except BaseException:
        stop(proc)
        raise
    return url, proc


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a failed command: no traceback, no key."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0, r.stdout
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert KEY not in r.stderr + r.stdout
    assert lines[0].startswith("emailplan: error: ")
    return lines[0]


def cli(*args: str, key: str = KEY, url: str = "", **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMAILPLAN_API_KEY": key, "EMAILPLAN_API_URL": url, **env_extra}
    return subprocess.run([EMAILPLAN, *args], capture_output=True, text=True, env=env, timeout=120)


def test_import_a_csv_list_then_again(api_url: str, tmp_path: Path) -> None:
    f = tmp_path / "old-tool-export.csv"
    rows = ["id,email,reason"] + [f"{i},user{i}@example.com,bounce" for i in range(2500)]
    f.write_text("\n".join([*rows, "9999,USER7@example.com,dup"]) + "\n")
    r = cli("suppressions", "import", str(f), "--quiet", url=api_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"received": 2501, "added": 2500}
    again = cli("suppressions", "import", str(f), "--quiet", url=api_url)
    assert json.loads(again.stdout)["added"] == 0


def test_a_bad_row_is_named_and_nothing_is_imported(api_url: str, tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("a@example.com\nb@example.com\nnot an address\nc@example.com\n")
    r = cli("suppressions", "import", str(f), "--quiet", url=api_url)
    assert r.returncode == 1
    assert "row 3: 'not an address' is not a valid address" in r.stderr
    assert "nothing imported" in r.stderr
    ok = tmp_path / "ok.txt"
    ok.write_text("a@example.com\n")
    assert json.loads(cli("suppressions", "import", str(ok), "--quiet", url=api_url).stdout)["added"] == 1


def test_wrong_key_is_a_clear_error_that_does_not_echo_the_key(api_url: str, tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("a@example.com\n")
    r = cli("suppressions", "import", str(f), "--quiet", key="wrong-secret-value", url=api_url)
    assert r.returncode == 1
    assert "answered 401" in r.stderr and "x-api-key" in r.stderr
    assert "set EMAILPLAN_API_KEY" in one_line_error(r)
    assert "wrong-secret-value" not in r.stderr + r.stdout


def test_stats_of_an_unknown_plan_and_bad_flags(api_url: str) -> None:
    r = cli("stats", "6f1c1d1e-1111-4222-8333-944455556666", url=api_url)
    assert r.returncode == 1 and "not known to the data plane" in one_line_error(r)
    r = cli("stats", "not-a-uuid", url=api_url)
    assert r.returncode == 1 and "uid or NAMESPACE/NAME" in one_line_error(r)
    r = cli("stats", "x", url="ftp://example.com")
    assert r.returncode == 1 and "--api-url must start with http" in r.stderr
    r = cli("suppressions", "import", "/nonexistent.csv", url=api_url)
    assert r.returncode == 1 and "does not exist" in r.stderr


PLAN_BODY = {
    "name": "spring",
    "namespace": "mail",
    "from": "News <news@example.com>",
    "subject": "Hello {{ name }}",
    "text": "Hi {{ name }}",
    "ratePerSecond": 20,
}


def register(url: str, plan_id: str, **changes: object) -> None:
    req = urllib.request.Request(
        f"{url}/v1/plans/{plan_id}",
        data=json.dumps({**PLAN_BODY, **changes}).encode(),
        method="PUT",
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=30).close()


def test_stats_shows_processing(api_url: str) -> None:
    plan_id = "0b6c1d1e-1111-4222-8333-944455556666"
    register(api_url, plan_id)
    r = cli("stats", plan_id, url=api_url)
    assert r.returncode == 0, r.stderr
    rows = {line.strip("│ ").split()[0] for line in r.stdout.splitlines() if "│" in line}
    assert {"created", "processing", "sent", "total"} <= rows, r.stdout


def test_stats_of_an_ab_test_shows_each_variant(api_url: str) -> None:
    plan_id = "0b6c1d1e-1111-4222-8333-944455556667"
    variants = [{"name": "calm", "subject": "Hello"}, {"name": "loud", "subject": "HELLO!"}]
    register(api_url, plan_id, variants=variants, testPercent=20, releasePercent=20)
    r = cli("stats", plan_id, url=api_url)
    assert r.returncode == 0, r.stderr
    lines = [
        [w for w in line.split() if w not in "│┃"]
        for line in r.stdout.splitlines()
        if "│" in line or "┃" in line
    ]
    assert ["count", "calm", "loud"] in lines, r.stdout
    for count in ("recipients", "sent", "delivered", "opened", "clicked", "bounced", "complained"):
        assert [count, "0", "0"] in lines, r.stdout


def test_api_down_or_missing_is_one_line_with_the_fix(migrated: str, tmp_path: Path) -> None:
    line = one_line_error(cli("stats", "0b6c1d1e-1111-4222-8333-944455556666", url=""))
    assert "no API URL" in line and "EMAILPLAN_API_URL" in line
    line = one_line_error(
        cli("stats", "0b6c1d1e-1111-4222-8333-944455556666", url="http://127.0.0.1:9", key="")
    )
    assert "no API key" in line and "EMAILPLAN_API_KEY" in line
    closed = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli("stats", "0b6c1d1e-1111-4222-8333-944455556666", url=closed))
    assert "cannot reach the API at " + closed in line and "EMAILPLAN_API_URL" in line
    # A URL with a password: the message shows the host, never the password.
    uid = "0b6c1d1e-1111-4222-8333-944455556666"
    line = one_line_error(cli("stats", uid, url=f"http://admin:hunter2pw@{closed.split('//')[1]}"))
    assert "hunter2pw" not in line and "cannot reach the API at " + closed in line


def test_api_without_its_database_is_a_server_error_line(tmp_path: Path) -> None:
    """The API runs but its database went away: a 5xx is the API's fault and says where to look."""
    from emailplan.sender.migrate import upgrade_to

    pg = PostgresServer().start()  # its own temporary directory, readable by the postgres user
    try:
        upgrade_to(pg.url)
        url, proc = start_api(pg.url, tmp_path / "api.log")
        try:
            plan_id = "0b6c1d1e-1111-4222-8333-944455556666"
            register(url, plan_id)
            pg.stop()
            r = cli("stats", plan_id, url=url)
            line = one_line_error(r)
            assert " answered 5" in line and "failed, not your request" in line
            assert f"{url}/readyz" in line and "EMAILPLAN_DATABASE_URL" in line
        finally:
            stop(proc)
    finally:
        pg.cleanup()


@pytest.mark.kube
def test_stats_by_namespace_and_name(api_url: str, crd_installed: KubeCluster, namespace: str) -> None:
    plan = {
        "apiVersion": "emailplan.io/v1alpha1",
        "kind": "EmailPlan",
        "metadata": {"name": "spring"},
        "spec": {
            "from": "News <news@example.com>",
            "subject": "Hi",
            "text": "Hi",
            "recipients": {"inline": [{"email": "a@example.com"}]},
        },
    }
    crd_installed.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(plan))
    uid = crd_installed.kubectl(
        "get", "emailplan", "spring", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    )
    kube_env = {"KUBECONFIG": str(crd_installed.kubeconfig)}
    # Not registered with the data plane (no operator runs here): said so, with the uid.
    line = one_line_error(cli("stats", f"{namespace}/spring", url=api_url, **kube_env))
    assert uid.stdout in line and "not known to the data plane" in line
    assert f"no operator watches {namespace}" in line  # the likely cause when nothing shows at all
    register(api_url, uid.stdout)
    r = cli("stats", f"{namespace}/spring", "--json", url=api_url, **kube_env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["planId"] == uid.stdout
    line = one_line_error(cli("stats", f"{namespace}/autumn", url=api_url, **kube_env))
    assert "EmailPlan autumn not found in namespace " + namespace in line
    line = one_line_error(
        cli("stats", f"{namespace}/spring", url=api_url, KUBECONFIG=str(Path("/nonexistent")))
    )
    assert "KUBECONFIG" in line and "uid" in line


UNVERIFIED = (
    "MessageRejected: Email address is not verified. The following identities failed the check "
    "in region US-EAST-1: news@unverified.test"
)


def seed_failures(database_url: str, failed: int, suppressed: str | None = None) -> str:
    """A plan with ``failed`` messages refused by SES (and one suppressed address), through the ledger."""
    from emailplan.sender.db import make_engine
    from emailplan.sender.store import claims, loading, plans, sendresults

    plan_id = uuid.uuid4()

    class Queue:
        async def enqueue(self, plan_id: uuid.UUID, batches: object) -> None:
            return None

        async def purge(self, plan_id: uuid.UUID) -> None:
            return None

    async def seed() -> None:
        engine = make_engine(url=database_url, pool_size=2)
        try:
            await plans.upsert_plan(engine, plan_id, name="spring", namespace="mail", spec=PLAN_BODY)
            if suppressed:
                await loading.add_suppressions(engine, [suppressed], "bounce")
            emails = [f"u{i:04d}@example.com" for i in range(failed)] + ([suppressed] if suppressed else [])
            await loading.insert_recipients(
                engine, plan_id, [(i + 1, {"email": e}) for i, e in enumerate(emails)]
            )
            await loading.complete_recipients(engine, plan_id, Queue())
            async with engine.connect() as conn:
                ids = list(
                    (
                        await conn.execute(
                            text("SELECT id FROM messages WHERE plan_id = :p AND status = 'created'"),
                            {"p": plan_id},
                        )
                    ).scalars()
                )
            await claims.claim(engine, plan_id, ids, "w", 60)
            await sendresults.record_results(
                engine, plan_id, [sendresults.SendResult(i, "failed", error=UNVERIFIED) for i in ids]
            )
        finally:
            await engine.dispose()

    asyncio.run(seed())
    return str(plan_id)


def test_failures_lists_every_address_with_its_reason_as_csv(api_url: str, migrated: str) -> None:
    plan_id = seed_failures(migrated, 1205, suppressed="gone@example.com")  # two pages of the API
    r = cli("failures", plan_id, "--format", "csv", url=api_url)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["email", "status", "reason", "detail", "at"]
    assert len(rows) == 1206 and len({row["email"] for row in rows}) == 1206
    failed = [row for row in rows if row["status"] == "failed"]
    assert {row["reason"] for row in failed} == {"MessageRejected: Email address is not verified"}
    assert failed[0]["detail"] == UNVERIFIED and failed[0]["at"]
    gone = next(row for row in rows if row["email"] == "gone@example.com")
    assert (gone["status"], gone["reason"]) == ("suppressed", "Suppressed: bounce")
    r = cli("failures", plan_id, "--format", "csv", "--limit", "7", url=api_url)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 1 + 7, r.stdout


def test_failures_table_and_errors(api_url: str, migrated: str) -> None:
    plan_id = seed_failures(migrated, 3)
    r = cli("failures", plan_id, "--limit", "2", url=api_url, COLUMNS="160")  # a terminal's width
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("u000") == 2 and "MessageRejected: Email address is not verified" in r.stdout
    line = one_line_error(cli("failures", "6f1c1d1e-1111-4222-8333-944455556666", url=api_url))
    assert "not known to the data plane" in line
    line = one_line_error(cli("failures", "not-a-uuid", url=api_url))
    assert "uid or NAMESPACE/NAME" in line
    line = one_line_error(cli("failures", plan_id, url=api_url, key="wrong-key"))
    assert "answered 401" in line
    r = cli("failures", plan_id, "--limit", "0", url=api_url)
    assert r.returncode == 2 and "--limit" in r.stderr and "Traceback" not in r.stderr
    clean = seed_failures(migrated, 0)
    r = cli("failures", clean, url=api_url)
    assert r.returncode == 0 and "no failed or suppressed addresses" in r.stdout

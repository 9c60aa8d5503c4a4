"""`emailplan suppressions import` and `emailplan stats` against a real `emailplan api` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.ports import free_port, wait_for
from devenv.procs import spawn, stop

EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")
KEY = "admin-cli-test-key"


@pytest.fixture
def api_url(migrated: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": migrated,
        "EMAILPLAN_API_KEY": KEY,
        "EMAILPLAN_AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "EMAILPLAN_METRICS_PORT": "0",
    }
    log = Path(tempfile.mkdtemp(prefix="emailplan-admin-")) / "api.log"
    proc = spawn([EMAILPLAN, "api", "--host", "127.0.0.1", "--port", str(port)], log, env=env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)

    try:
        wait_for(ready, 60, "emailplan api")
        yield url
    finally:
        stop(proc)


def cli(*args: str, key: str = KEY, url: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMAILPLAN_API_KEY": key, "EMAILPLAN_API_URL": url}
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
    assert "wrong-secret-value" not in r.stderr + r.stdout


def test_stats_of_an_unknown_plan_and_bad_flags(api_url: str) -> None:
    r = cli("stats", "6f1c1d1e-1111-4222-8333-944455556666", url=api_url)
    assert r.returncode == 1 and "answered 404" in r.stderr
    r = cli("stats", "not-a-uuid", url=api_url)
    assert r.returncode == 1 and "planId" in r.stderr
    r = cli("stats", "x", url="ftp://example.com")
    assert r.returncode == 1 and "--api-url must start with http" in r.stderr
    r = cli("suppressions", "import", "/nonexistent.csv", url=api_url)
    assert r.returncode == 1 and "does not exist" in r.stderr

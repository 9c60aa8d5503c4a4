"""schemathesis against /v1/openapi.json of a real ``emailplan api`` process: no 5xx, no schema violations.

The API runs as the console command would run it (a subprocess with
EMAILPLAN_* settings, real PostgreSQL, moto for SQS/S3), so this also proves
the entry point, settings parsing and graceful start-up. schemathesis is
bounded (examples per operation, fixed seed) to keep the run under two minutes.
"""

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
from support.api import API_KEY, TOKEN_KEY, TOPIC

from devenv.ports import free_port, wait_for
from devenv.procs import spawn, stop
from emailplan.sender.migrate import upgrade_to

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture
def api_process(database_url: str, aws: object) -> Iterator[tuple[str, Path]]:
    upgrade_to(database_url)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="emailplan-api-")) / "api.log"
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": database_url,
        "EMAILPLAN_API_KEY": API_KEY,
        "EMAILPLAN_TOKEN_KEY": TOKEN_KEY,
        "EMAILPLAN_SNS_TOPIC_ARNS": json.dumps([TOPIC]),
        "EMAILPLAN_MAX_UPLOAD_BYTES": "1000000",
        "EMAILPLAN_DB_POOL_SIZE": "5",
    }
    proc = spawn(
        [sys.executable, "-m", "emailplan.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        log,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"api exited: {log.read_text()[-3000:]}")
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
            return bool(r.status == 200)

    try:
        wait_for(ready, 60, "emailplan api")
        yield base, log
    finally:
        stop(proc, timeout=30)


def test_schemathesis_finds_no_server_errors_or_schema_violations(api_process: tuple[str, Path]) -> None:
    base, log = api_process
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    cmd = [
        str(st),
        "run",
        f"{base}/v1/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        os.environ.get("EMAILPLAN_ST_EXAMPLES", "60"),
        "--seed",
        "20260401",
        "--workers",
        "1",
        "--header",
        f"x-api-key:{API_KEY}",
        "--generation-database",
        "none",
        "--phases",
        "examples,coverage,fuzzing",
        "--no-color",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
    ]
    # The hooks module lives next to this file; never put the repository root on the path
    # (its operator/ directory would shadow the standard library's operator module).
    paths = [str(Path(__file__).parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "test_api_st_hooks", "PYTHONPATH": os.pathsep.join(paths)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tempfile.gettempdir())
    Path(tempfile.gettempdir(), "emailplan-schemathesis.txt").write_text(r.stdout + r.stderr)
    output = r.stdout[-12000:] + r.stderr[-3000:]
    assert r.returncode == 0, output + "\n--- api log ---\n" + log.read_text()[-4000:]
    assert "passed" in output.lower() or "success" in output.lower(), output

"""The README's demo command, run non-interactively: the example plan completes with exact counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_demo_sends_the_example_plan_end_to_end(repo_root: str, tmp_path: Path) -> None:
    out = tmp_path / "final.json"
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(repo_root, "hack", "demo.py"),
            "--non-interactive",
            "--timeout",
            "480",
            "--json",
            str(out),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, f"demo failed:\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}"
    final = json.loads(out.read_text())
    # 3,000 rows: 3 invalid (refused with row numbers), 5 suppressed before the plan started.
    assert final["phase"] == "Completed"
    assert final["total"] == 2997
    assert final["suppressed"] == 5
    assert final["sent"] == 2992
    assert final["failed"] == 0
    assert final["sesReceived"] == 2992, "SES must receive each valid, unsuppressed recipient exactly once"
    # Simulated readers opened ~30 % and clicked ~10 % (a click counts as an open too).
    assert final["simulatedOpens"] > 500 and final["simulatedClicks"] > 150
    assert final["opened"] == final["simulatedOpens"]
    assert final["clicked"] == final["simulatedClicks"]
    assert final["simulatedUnsubscribes"] > 5
    assert final["unsubscribed"] == final["simulatedUnsubscribes"]
    assert "demo completed" in r.stdout
    assert "Where to look next" in r.stdout

"""The README's three campaign walk-throughs, run as it writes them, checked by what they narrate.

Each command applies one example of ``examples/`` unchanged on the demo stack, with simulated
mailboxes and the operator's test clock; the test reads the narration a user reads (the
winner and why, the gate's pause and the command that continues it, the window closed with
its opening in the plan's zone and UTC) and the plan's final status (``--json``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import demo_campaigns
import pytest

pytestmark = [pytest.mark.kube, pytest.mark.slow]
README_COMMAND = re.compile(r"`\./hack/demo\.sh (--campaign (\w+)(?: --[\w-]+)*)`")


def readme_commands(repo_root: str) -> dict[str, list[str]]:
    """The walk-through commands of the README's quick start, by campaign: the demo.sh arguments."""
    text = (Path(repo_root) / "README.md").read_text()
    return {m.group(2): shlex.split(m.group(1)) for m in README_COMMAND.finditer(text)}


def run_walk(repo_root: str, tmp_path: Path, campaign: str) -> tuple[str, dict[str, Any]]:
    """Run the README's command for ``campaign`` (through hack/demo.py: demo.sh's set-up step is the
    test harness's); returns what it printed and the plan's final status."""
    args = readme_commands(repo_root)[campaign]
    out = tmp_path / "final.json"
    proc = subprocess.Popen(
        [sys.executable, str(Path(repo_root) / "hack" / "demo.py"), *args, "--json", str(out)],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        text, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(120)
    assert proc.returncode == 0, text[-6000:]
    assert "demo completed" in text
    return text, json.loads(out.read_text())


def every_nth(total: int, n: int) -> int:
    """How many of ``total`` messages the mailboxes bounce: the first and then every n-th."""
    return len(range(1, total + 1, n))


def check_counts(final: dict[str, Any], campaign: str) -> None:
    """Everyone got exactly one email, and the status counts every simulated event."""
    size = demo_campaigns.CAMPAIGNS[campaign].recipients
    assert final["phase"] == "Completed"
    assert final["total"] == final["sent"] == size and final["failed"] == 0
    assert final["uniqueRecipients"] == size, "a recipient got no email"
    extra = final["sesReceived"] - size
    assert extra == 0, f"each recipient exactly once: SES received {extra} emails more than {size}"
    bounces = every_nth(size, demo_campaigns.CAMPAIGNS[campaign].bounce_every)
    assert final["simulatedBounces"] == final["bounced"] == bounces
    assert final["simulatedDeliveries"] == final["delivered"] == size - bounces
    assert final["simulatedOpens"] == final["opened"]
    assert final["simulatedClicks"] == final["clicked"]
    if demo_campaigns.CAMPAIGNS[campaign].open_percent:  # the example tracks opens and clicks
        assert final["opened"] > 0 and final["clicked"] > 0


def test_ab_walkthrough_names_the_winner_and_why(repo_root: str, tmp_path: Path) -> None:
    text, final = run_walk(repo_root, tmp_path, "abtest")
    rows = {r["name"]: r for r in final["abTest"]["variants"]}
    # The simulated readers open "question" far more often than "plain".
    assert rows["question"]["openRate"] > rows["plain"]["openRate"] > 0
    assert final["winner"] == final["abTest"]["winner"] == "question"
    for name in ("plain", "question"):
        assert rows[name]["sent"] >= 200, "every variant reaches the example's minSample"
        assert rows[name]["opened"] == final["simulatedCohortOpensByVariant"][name]
        assert re.search(rf"variant {name}: {rows[name]['sent']} sent, {rows[name]['opened']} opened", text)
    assert re.search(r"the test cohort is sent: \d+ of 2400 recipients \(20 % of the list\)", text)
    assert re.search(r"the clock jumps \d.* ahead .*abTest\.decideAfter: 4h", text), (
        "decideAt on the test clock"
    )
    assert re.search(r"winner: question, because best uniqueOpens: plain \d+\.\d+%, question \d+\.\d+%", text)
    # Nobody outside the test cohort was sent anything before the winner was chosen.
    cohort = sum(r["sent"] for r in rows.values())
    assert re.search(rf"the rest of the list \({2400 - cohort} recipients\) now gets question", text)
    check_counts(final, "abtest")


def test_rollout_walkthrough_pauses_at_the_gate_says_how_to_continue_and_continues(
    repo_root: str, tmp_path: Path
) -> None:
    text, final = run_walk(repo_root, tmp_path, "rollout")
    check_counts(final, "rollout")
    assert final["rollout"]["step"] == 3 and final["rollout"]["state"] == "Completed"
    paused = re.search(
        r"paused \(RolloutGateFailed\): rollout step 1 of 3 \(1%\): bounce rate (\d+\.\d+)% over the "
        r"limit 3\.00%.*raise spec\.rollout\.maxBounceRate above",
        text,
    )
    assert paused, text[-6000:]
    command = re.search(
        r"  (kubectl patch eplan reactivation -n demo --type merge -p "
        r"'\{\"spec\":\{\"rollout\":\{\"maxBounceRate\":([\d.]+)\}\}\}')",
        text,
    )
    assert command and float(command.group(2)) > float(paused.group(1)) / 100
    ran = text.index("the demo runs that command now")
    assert text.index(command.group(1)[len("kubectl ") :], ran) > ran, "the printed command is run"
    assert text.index("the rollout continues") > ran
    assert re.search(r"rollout step 2 of 3 \(10 % of the list\) is sent", text)


def test_window_walkthrough_closes_with_the_opening_in_the_plans_zone_and_sends_after(
    repo_root: str, tmp_path: Path
) -> None:
    text, final = run_walk(repo_root, tmp_path, "window")
    check_counts(final, "window")
    opening = r"\w{3} \d{4}-\d\d-\d\d 09:00 Europe/Berlin \(\d{4}-\d\d-\d\dT0[78]:00:00Z\)"
    closed = re.findall(
        rf"the window is closed \(.*?\): (\d+) of 420 sent, no sender pods; it opens at {opening}.*?"
        r"(\d+) sent after waiting: nothing goes out while the window is closed",
        text,
        re.S,
    )
    assert closed, text[-6000:]
    for at_close, after_wait in closed:
        assert at_close == after_wait, "mail went out while the window was closed"
    assert any(0 < int(n) < 420 for n, _ in closed), "the window closed while the list was being sent"
    assert re.search(r"the window is open and closes at \w{3} \S+ 17:30 Europe/Berlin \(", text)
    last_closed = text.rindex("the window is closed (")
    assert text.find("the window is open: sending resumes", last_closed) > last_closed

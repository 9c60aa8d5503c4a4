"""The README's demo command, run non-interactively with --keep, explored with kubectl, then stopped.

One run proves what a new user sees: the example plan completes with exact counts,
every column moves (simulated readers and simulated SES notifications through the real
signed SNS path), the rejected rows are reported, and the printed KUBECONFIG, API URL and
key work from another terminal. Stopping the demo leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import demo as demo_script
import pytest
from support.leftovers import Output

from emailplan import devsns

pytestmark = [pytest.mark.kube, pytest.mark.slow]
MARK = "EMAILPLAN_DEMO_TEST_RUN"
DEMO_ARGS = ("--non-interactive", "--keep", "--timeout", "480")
EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")


def marked_processes(mark: str) -> list[int]:
    """Processes whose environment carries ``MARK=mark``: every one the demo started inherits it."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def demo(repo_root: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Output, str, Path]]:
    mark = uuid.uuid4().hex
    out = tmp_path / "final.json"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(repo_root, "hack", "demo.py"), *DEMO_ARGS, "--json", str(out)],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, MARK: mark, "COLUMNS": "200"},
    )
    try:
        yield proc, Output(proc), mark, out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_demo_completes_can_be_explored_and_stops_clean(
    demo: tuple[subprocess.Popen[str], Output, str, Path], repo_root: str
) -> None:
    proc, output, mark, out = demo
    kubeconfig = output.wait_for(r"export KUBECONFIG=(\S+)", 900).group(1)
    api = output.wait_for(r"export EMAILPLAN_API_URL=(\S+) EMAILPLAN_API_KEY=(\S+)", 30)
    output.wait_for(r"ready: the stack keeps running", 30)
    text = output.text()
    assert "demo completed" in text

    final = json.loads(out.read_text())
    # 3,000 rows: 3 invalid (refused with row numbers), 5 suppressed before the plan started.
    assert final["phase"] == "Completed"
    assert final["rejected"] == 3 and re.search(r"rejected rows\W+3\b", text)
    assert final["total"] == 2997
    assert final["suppressed"] == 5
    assert final["sent"] == 2992
    assert final["failed"] == 0
    assert final["sesReceived"] == 2992, "SES must receive each valid, unsuppressed recipient exactly once"
    # Simulated readers opened ~30 % and clicked ~10 % of the delivered mail.
    assert final["simulatedOpens"] > 500 and final["simulatedClicks"] > 150
    assert final["opened"] == final["simulatedOpens"]
    assert final["clicked"] == final["simulatedClicks"]
    assert final["simulatedUnsubscribes"] > 5
    assert final["unsubscribed"] == final["simulatedUnsubscribes"]
    # Simulated SES notifications, signed as SNS signs them: Delivered, Bounced, Complained move.
    assert final["simulatedDeliveries"] > 2000 and final["delivered"] == final["simulatedDeliveries"]
    assert final["simulatedBounces"] >= 1 and final["bounced"] == final["simulatedBounces"]
    assert final["simulatedComplaints"] == 1 and final["complained"] == 1
    # The progress moved in steps, not in one jump from 0 to everything.
    sent_seen = {int(m) for m in re.findall(r"Sending\s+sent=(\d+)", text)}
    assert len(sent_seen - {0}) >= 2, f"status.sent moved only through {sorted(sent_seen)}"
    # Deliveries and opens show while the plan is sending, not only once it completed.
    assert re.search(r"Sending\s+sent=\d+ .*delivered=[1-9]", text), "delivered stayed 0 while Sending"
    assert re.search(r"Sending\s+sent=\d+ .*opened=[1-9]", text), "opened stayed 0 while Sending"

    # Explore from "another terminal" with what the demo printed.
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    got = subprocess.run(
        ["kubectl", "get", "emailplans", "-n", "demo", "-o", "jsonpath={.items[0].status.phase}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert got.stdout == "Completed", got.stderr
    req = urllib.request.Request(
        f"{api.group(1)}/v1/results/sent?hours=1", headers={"x-api-key": api.group(2)}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.load(r)["count"] == 2992
    stats = subprocess.run(
        [
            EMAILPLAN,
            "stats",
            "demo/spring-launch",
            "--json",
            "--api-url",
            api.group(1),
            "--api-key",
            api.group(2),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert stats.returncode == 0 and json.loads(stats.stdout)["sent"] == 2992, stats.stderr

    play_with_events(output, env, final)
    applied_elsewhere_is_sent_too(env, repo_root)

    running = marked_processes(mark)
    assert len(running) >= 7, f"expected the demo's servers to run: {running}"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0
    deadline = time.monotonic() + 30
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marked_processes(mark) == [], "the demo left processes behind"
    output.wait_for("stopping all demo processes", 30)


def status_of(env: dict[str, str], ns: str, name: str) -> dict[str, Any]:
    got = subprocess.run(
        ["kubectl", "get", "emailplan", name, "-n", ns, "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return dict(json.loads(got.stdout).get("status") or {}) if got.returncode == 0 else {}


def wait_status(env: dict[str, str], ns: str, name: str, check: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + 180
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = status_of(env, ns, name)
        if check(status):
            return
        time.sleep(1)
    raise AssertionError(f"{ns}/{name}: last status {status}")


def play_with_events(output: Output, env: dict[str, str], final: dict[str, Any]) -> None:
    """The printed settings let `emailplan sns` play SES and readers from another terminal."""
    text = output.text()
    assert "The operator watches every namespace" in text
    ses_url = re.search(r"export EMAILPLAN_AWS_ENDPOINT_URL=(\S+) EMAILPLAN_DEV_MODE=1", text)
    signing = re.search(r"export EMAILPLAN_DEV_SNS_KEY_FILE=(\S+) EMAILPLAN_DEV_SNS_CERT_URL=(\S+)", text)
    api = re.search(r"export EMAILPLAN_API_URL=(\S+) EMAILPLAN_API_KEY=(\S+)", text)
    assert ses_url and signing and api, text[-3000:]
    env = {
        **env,
        "EMAILPLAN_DEV_MODE": "1",
        "EMAILPLAN_AWS_ENDPOINT_URL": ses_url.group(1),
        "EMAILPLAN_DEV_SNS_KEY_FILE": signing.group(1),
        "EMAILPLAN_DEV_SNS_CERT_URL": signing.group(2),
        "EMAILPLAN_API_URL": api.group(1),
        "EMAILPLAN_API_KEY": api.group(2),
    }
    # Recipients the simulated readers left alone: SES reported nothing for the first two (they
    # stay "sent"), the third was delivered but not opened.
    addresses = [m.address for m in devsns.sent_mail(ses_url.group(1))]
    d = demo_script
    unreported = [a for a in addresses if d.bucket(a, 1000) >= d.REPORTED_PER_MILLE]
    unopened = [a for a in addresses if d.delivered_unopened(a)]
    for event, address, count in (
        ("bounce", unreported[0], "bounced"),
        ("delivery", unreported[1], "delivered"),
        ("open", unopened[0], "opened"),
    ):
        done = subprocess.run(
            [EMAILPLAN, "sns", event, "demo/spring-launch", "--to", address],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0 and address in done.stdout, done.stderr
        want = int(final[count]) + 1
        wait_status(env, "demo", "spring-launch", lambda s, c=count, w=want: int(s.get(c) or 0) == w)


def applied_elsewhere_is_sent_too(env: dict[str, str], repo_root: str) -> None:
    """A plan applied to `default` (not the demo's namespace), as the printed hint says, is sent too."""
    example = os.path.join(repo_root, "examples", "emailplan-inline.yaml")
    recipients = Path(example).read_text().count("- email:")
    done = subprocess.run(
        ["kubectl", "apply", "-n", "default", "-f", example],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    wait_status(
        env,
        "default",
        "welcome-batch",
        lambda s: s.get("phase") == "Completed" and s.get("sent") == recipients,
    )

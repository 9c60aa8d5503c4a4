"""README "Node mode", followed word for word: from its code block to a plan sent by real Pods.

The test knows none of the steps. It reads the code block of the README's node-mode
section and runs it as written, in the repository, as root (as the README says). Of what
``cluster.py up`` then prints it runs the first command (the one that enters the run's
network namespace) and pastes the others into that shell, the way a newcomer copies them;
the last of them watches the plan (``kubectl get emailplans -w``), and the test reads that
watch until the plan is Completed with every message sent. A step that needs knowledge the
README or the printed text does not give makes this test fail, as it would fail the newcomer.

It also checks what the README promises about that shell (``KUBECONFIG`` set, ``helm`` on
``PATH``) and that the sending was done by sender Pods a kubelet started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.leftovers import Output
from support.nodeshell import end, indented_blocks, read_instructions, start, user_env

pytestmark = [pytest.mark.node, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SECTION = re.compile(r"^## Node mode\b.*?(?=^## |\Z)", re.M | re.S)
CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
PLAN_TIMEOUT = 900.0  # helm install --wait (the hook Job, two Pods) and the plan, on 2 shared cores
WATCH_HEADER = ["NAME", "PHASE", "TOTAL", "SENT", "FAILED"]


def readme_node_commands() -> str:
    """The commands of the README's node-mode section: its code blocks, in order."""
    section = SECTION.search((REPO / "README.md").read_text())
    assert section, "README.md has no section '## Node mode'"
    blocks = [b.strip() for b in CODE_BLOCK.findall(section.group(0)) if b.strip()]
    assert blocks, "README's node-mode section has no code block with the commands to run"
    return "\n".join(blocks) + "\n"


def test_readme_node_section_has_the_commands() -> None:
    """The extraction finds the launcher (a cheap check that runs before the long one)."""
    assert "cluster.py up" in readme_node_commands()


@pytest.fixture
def launched() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in reversed(procs):  # the shell first, then the cluster: Ctrl-C, as a user stops it
        end(proc)


def completed_row(output: Output) -> dict[str, str]:
    """Read the watch's lines until the plan's row says Completed; that row by column name."""
    output.wait_for(r"^NAME\s+PHASE\s", PLAN_TIMEOUT)
    header = output.lines[-1].split()
    assert header[: len(WATCH_HEADER)] == WATCH_HEADER, f"unexpected columns: {header}"
    row = output.wait_for(r"^\S+\s+Completed\s", PLAN_TIMEOUT).string.split()
    return dict(zip(header, row, strict=False))


def in_namespace(enter: str, script: str) -> str:
    """Run ``script`` in the shell that the printed ``enter`` command opens; its output.

    What it leaves running in the background (a port-forward) is ended with it.
    """
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            ["bash", "-c", enter],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=user_env(),
            start_new_session=True,
        )
        try:
            proc.communicate(script, timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        out.seek(0)
        text = out.read()
    assert proc.returncode == 0, f"{script!r} in the node's shell failed:\n{text}"
    return text


def test_readme_node_mode_sends_a_plan_with_real_pods(launched: list[subprocess.Popen[str]]) -> None:
    cluster = start(["bash", "-c", readme_node_commands()], REPO, user_env())
    launched.append(cluster)
    printed = read_instructions(Output(cluster))
    assert cluster.poll() is None, f"the README's command ended:\n{printed}"
    blocks = indented_blocks(printed)
    assert len(blocks) >= 2, f"expected a command to enter the namespace, then commands to paste:\n{printed}"
    enter, paste = blocks[0], blocks[1]
    assert "ip netns exec" in enter, f"the first printed command does not enter a network namespace:\n{enter}"

    # What the README says of that shell.
    said = in_namespace(enter, 'command -v helm; echo "KUBECONFIG=$KUBECONFIG"; kubectl get nodes -o name\n')
    assert re.search(r"^/\S+/helm$", said, re.M), f"helm is not on PATH in the node's shell:\n{said}"
    assert re.search(r"^KUBECONFIG=/\S+", said, re.M), f"KUBECONFIG is not set there:\n{said}"
    assert "node/" in said, f"kubectl there does not reach the cluster:\n{said}"

    # Paste the printed commands; the last one watches the plan, as the README says.
    shell = start(["bash", "-c", enter], REPO, user_env(), stdin=True)
    launched.append(shell)
    watch = Output(shell)
    assert shell.stdin is not None
    shell.stdin.write(paste + "\n")
    shell.stdin.close()
    row = completed_row(watch)
    assert int(row["TOTAL"]) > 0 and row["SENT"] == row["TOTAL"] and row["FAILED"] == "0", (
        f"the plan completed without sending everything: {row}\n{watch.text()[-4000:]}"
    )

    # Sent by sender Pods that the kubelet started (there is no stand-in for Pods in node mode).
    events = json.loads(
        in_namespace(enter, "kubectl get events -A --field-selector reason=Started -o json\n")
    )
    started = {
        e["involvedObject"]["name"]
        for e in events["items"]
        if e["involvedObject"]["kind"] == "Pod" and e.get("source", {}).get("component") == "kubelet"
    }
    senders = [name for name in started if name.startswith(f"emailplan-{row['NAME']}-sender-")]
    assert senders, f"no sender Pod of {row['NAME']} was started by the kubelet: {sorted(started)}"

    # Then the API, as the printed text (and the chart's notes) say: its counts agree.
    assert len(blocks) >= 3, f"no commands printed to reach the API from the node's shell:\n{printed}"
    stats = in_namespace(enter, blocks[2] + "\n")
    assert re.search(rf"\bsent\b\W+{row['SENT']}\b", stats), f"the API's counts:\n{stats}"

"""Node mode as a user meets it: ``cluster.py up`` in one terminal, its printed commands in another.

``cluster.py up`` prints indented blocks of commands: first the one that enters the run's
network namespace, then the ones to paste into that shell. The helpers here read those
blocks from its output the way a person does (by their indentation, not by their words),
so the tests run exactly what was printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from support.leftovers import Output

READY_TIMEOUT = 600.0  # the node starts in 1.5-3 minutes on the shared 2-core machine


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a newcomer's shell: nothing the test session set for itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILPLAN_") and k != "KUBECONFIG"}
    return {**env, **extra}


def indented_blocks(text: str) -> list[str]:
    """The runs of indented lines in ``text`` (commands to copy), dedented, in order."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("  ") and line.strip():
            current.append(line)
            continue
        if current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return [textwrap.dedent("\n".join(b)) for b in blocks]


def read_instructions(output: Output, quiet: float = 5.0, timeout: float = READY_TIMEOUT) -> str:
    """Wait for the first printed command, then for the printing to stop; all output so far."""
    output.wait_for(r"^  \S", timeout)
    return output.until_quiet(quiet)


def start(argv: list[str], cwd: Path, env: dict[str, str], stdin: bool = False) -> subprocess.Popen[str]:
    """A command in its own process group, as a terminal's job; output (both streams) readable."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def end(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT, timeout: float = 120.0) -> None:
    """Stop a job as a terminal does (the signal to its process group); SIGKILL if it stays."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

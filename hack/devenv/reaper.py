"""A watchdog that cleans up after a launcher however it ends: exit, Ctrl-C, SIGTERM or SIGKILL.

The launchers (the demo, ``kube.py up``, the stack the tests and benchmarks use, the node
cluster) start servers in their own process groups, write private keys and data
directories to temporary directories and, in node mode, create namespaces and mounts.
PR_SET_PDEATHSIG kills direct children with their owner, but nothing in a SIGKILLed
process can remove a directory, a grandchild or a namespace. So the first thing that needs
cleaning starts this watchdog: a separate process in its own session (Ctrl-C in the
terminal does not reach it) that reads what to clean from a pipe. The owner holds the
only write end; when the owner ends in any way the pipe reaches end-of-file, and the
watchdog stops every registered process group, runs the registered undo commands (newest
first) and removes the registered directories, then exits.

What the owner already cleaned itself is found gone and skipped. A process group is
identified by its leader's pid *and* start time, so a pid reused by an unrelated process
is never signalled.

Owner side (in-process)::

    from devenv import reaper
    path = reaper.temp_dir("emailplan-pg-")          # removed at the latest when we end
    reaper.track_group(proc.pid)                      # the group is stopped when we end
    reaper.on_exit(["ip", "netns", "delete", "x"])    # run when we end
    reaper.keep(path)                                 # changed our mind: leave it

``EMAILPLAN_DETACH=1`` (``kube.py up --detach``) means the processes are meant to outlive
the launcher: nothing is registered then.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

GRACE_SECONDS = 10.0  # SIGTERM to SIGKILL, per cleanup


def detached() -> bool:
    """The launcher's processes are meant to outlive it (``kube.py up --detach``)."""
    return os.environ.get("EMAILPLAN_DETACH") == "1"


# --- the owner's side -------------------------------------------------------------------------------


class _Owner:
    """The pipe to this process's watchdog, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the watchdog belongs to the process that started it, not to a fork

    def send(self, entry: dict[str, Any]) -> None:
        if detached():
            return
        with self._lock:
            if self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self._pid = os.getpid()
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps(entry).encode() + b"\n")
                self._proc.stdin.flush()
            except BrokenPipeError:
                self._proc = None


_owner = _Owner()


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def track_group(pgid: int) -> None:
    """Stop the process group led by ``pgid`` when this process ends."""
    started = start_time(pgid)
    if started is not None:
        _owner.send({"group": pgid, "started": started})


def track_dir(path: Path) -> Path:
    """Remove ``path`` (recursively) when this process ends."""
    _owner.send({"dir": str(path)})
    return path


def temp_dir(prefix: str) -> Path:
    """A new temporary directory, removed when this process ends however it ends."""
    return track_dir(Path(tempfile.mkdtemp(prefix=prefix)))


def keep(path: Path) -> None:
    """Do not remove ``path`` after all (logs the user asked to keep)."""
    _owner.send({"keep": str(path)})


def on_exit(argv: list[str]) -> None:
    """Run ``argv`` when this process ends (undo a namespace, a mount); failures are ignored."""
    _owner.send({"run": argv})


# --- the watchdog ---------------------------------------------------------------------------------


def _members(pgid: int) -> list[int]:
    """Live (not zombie) processes in the group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _ours(pgid: int, started: str) -> bool:
    """The group is still the one registered: its leader is that process, or gone (members left)."""
    now = start_time(pgid)
    return now is None or now == started


def stop_groups(groups: dict[int, str]) -> None:
    """SIGTERM every registered group still there, SIGKILL what is left after the grace period."""
    live = {g for g, started in groups.items() if _ours(g, started) and _members(g)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in live:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(_members(g) for g in live):
            time.sleep(0.1)
        live = {g for g in live if _members(g)}
        if not live:
            return


def clean(groups: dict[int, str], commands: list[list[str]], dirs: dict[str, None]) -> None:
    stop_groups(groups)
    for argv in reversed(commands):
        try:
            subprocess.run(argv, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
    for path in reversed(list(dirs)):
        shutil.rmtree(path, ignore_errors=True)


def watch(stream: IO[bytes]) -> None:
    """Collect registrations until end-of-file (the owner is gone), then clean up."""
    groups: dict[int, str] = {}
    commands: list[list[str]] = []
    dirs: dict[str, None] = {}
    for line in stream:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "group" in entry:
            groups[int(entry["group"])] = str(entry["started"])
        elif "dir" in entry:
            dirs[str(entry["dir"])] = None
        elif "keep" in entry:
            dirs.pop(str(entry["keep"]), None)
        elif "run" in entry:
            commands.append([str(a) for a in entry["run"]])
    clean(groups, commands, dirs)


def main() -> None:
    # Its own session already keeps the terminal's Ctrl-C away; a hangup must not stop it either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch(sys.stdin.buffer)


if __name__ == "__main__":
    main()

"""CPU time of process trees from /proc (Linux), for benchmarks that charge each part its CPU.

A benchmark snapshots the trees it cares about when the measured window opens and charges
each tree the difference at the end. The process under test runs as a ``Charged`` command:
in a process group of its own, under a benchmark that is a child subreaper
(``PR_SET_CHILD_SUBREAPER``), so every process it starts is waited for by someone and its
CPU ends up in a ``wait4`` rusage, also a process orphaned by its parent's exit (a pod's
forkserver and the workers it forked outlive the pod's main process; charging only the
main process's rusage made a pod's CPU come out negative). ``machine_busy_seconds`` is the
cross-check no accounting can fool: the whole machine's busy time over the same window.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def parents() -> dict[int, int]:
    """pid → parent pid for every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            out[int(entry.name)] = int(fields[1])
    return out


def tree(root: int, table: dict[int, int] | None = None) -> list[int]:
    """``root`` and all its live descendants."""
    table = table if table is not None else parents()
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in table.items() if ppid in frontier]
        found += frontier
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (their own, not their reaped children's)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def reaped_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of the children ``pids`` waited for (``cutime`` + ``cstime``): processes that
    ended, such as PostgreSQL backends whose connection closed, live on only in there."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[13]) + int(fields[14])
    return total / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root``'s tree: the live processes and every descendant already reaped
    (a PostgreSQL backend that served a worker and exited with it is charged too)."""
    pids = tree(root)
    return cpu_seconds(pids) + reaped_cpu_seconds(pids)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (all processes, ours or not)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK


def self_cpu_seconds() -> float:
    """CPU seconds of this process (the benchmark harness polling the stub is work too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def become_subreaper() -> None:
    """Make this process the one that adopts (and so waits for) its orphaned descendants."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def group_members(pgid: int) -> list[int]:
    """Every process of process group ``pgid`` that /proc still lists (zombies included)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


def group_cpu(pgid: int) -> float:
    """CPU seconds so far of process group ``pgid``: each member's own and its reaped children's
    (a member that exited and waits, a zombie, to be reaped by a subreaper is counted too)."""
    pids = group_members(pgid)
    return cpu_seconds(pids) + reaped_cpu_seconds(pids)


class Charged:
    """A command whose every process is charged: CPU so far, and the exact total once all ended.

    The command runs in a new process group under this process, which becomes a child
    subreaper first: a process of the group whose parent exits is adopted here, and waiting
    for the whole group with ``wait4(-pgid)`` collects the rusage of every process that ever
    ran in it (a process reaped by another member is in that member's rusage). A process
    that leaves the group (``setsid``) escapes; ``wait`` names any it finds still running.
    """

    def __init__(self, cmd: list[str], **popen: Any) -> None:
        become_subreaper()
        self.proc = subprocess.Popen(cmd, process_group=0, **popen)
        self.pid = self.proc.pid

    def exited(self) -> bool:
        """Whether the command's main process has ended, without reaping it (its rusage stays)."""
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def cpu_so_far(self) -> float:
        """CPU seconds of every process of the group so far (live, and ended but not yet reaped)."""
        return group_cpu(self.pid)

    def wait(self, linger: float = 30.0) -> tuple[int, float]:
        """Wait for the main process, then for every process of its group that outlived it
        (``linger`` seconds, then SIGKILL): its exit code and the group's CPU seconds in all."""
        _, status, usage = os.wait4(self.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        total = usage.ru_utime + usage.ru_stime
        deadline = time.monotonic() + linger
        while True:
            try:
                pid, _, usage = os.wait4(-self.pid, os.WNOHANG)
            except ChildProcessError:
                break  # no process of the group is left for us to wait for
            if pid:
                total += usage.ru_utime + usage.ru_stime
                continue
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
            time.sleep(0.02)
        return self.proc.returncode, total

    def strays(self) -> list[int]:
        """Processes still in the group after ``wait``: ones it could not wait for."""
        return group_members(self.pid)


QUIET_CORES = 0.1  # other work on the machine below this many cores: the cross-check applies
AGREEMENT = 0.15  # accounted CPU within this share of the whole machine's busy CPU


def cpu_flags(
    figures: dict[str, float], accounted_s: float, machine_s: float, background_cores: float
) -> list[str]:
    """What is wrong with one round's CPU figures (empty: nothing). A negative figure is always
    wrong. The CPU charged to every process the round ran (``accounted_s``) must match the
    whole machine's busy CPU over the same window within ``AGREEMENT`` when nothing else was
    running (``background_cores``, measured just before the round, below ``QUIET_CORES``);
    on a busier machine that cross-check cannot be made, and the flag says so."""
    flags = [f"{name} negative ({value:.3f})" for name, value in figures.items() if value < 0]
    if background_cores >= QUIET_CORES:
        flags.append(f"unchecked: {background_cores:.2f} cores of other work on the machine")
    elif machine_s <= 0 or abs(accounted_s / machine_s - 1) > AGREEMENT:
        share = accounted_s / machine_s if machine_s > 0 else float("nan")
        flags.append(f"accounted CPU is {share:.2f}x the machine's busy CPU")
    return flags


def background_cores(seconds: float = 2.0) -> float:
    """Cores the machine keeps busy while this benchmark's own processes are idle."""
    busy0 = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - busy0) / seconds

"""CPU time of process trees from /proc (Linux), for benchmarks that charge each part its CPU.

A benchmark snapshots the trees it cares about when the measured window opens and
charges each tree the difference at the end; a process that exits inside the window
is charged through ``os.wait4`` by whoever waits for it (see ``throughput_bench``).
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


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

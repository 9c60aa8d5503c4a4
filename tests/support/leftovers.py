"""What a stopped launcher may have left behind: processes, listening sockets, temporary files.

A launcher under test runs with a marker in its environment (every process it starts
inherits it, however deep) and with ``TMPDIR`` pointing at a directory of the test's own,
so afterwards the test can tell exactly what is still there.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

MARK = "EMAILPLAN_LEFTOVER_MARK"


def _stat(proc: Path) -> tuple[str, int]:
    """(state, process group) of a /proc entry."""
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def marked_processes(mark: str, name: str = MARK) -> list[int]:
    """Live (not zombie) processes whose environment carries ``name=mark``, and the members of
    their process groups (PostgreSQL's children overwrite their environment with their title)."""
    needle = f"{name}={mark}".encode()
    groups: set[int] = set()
    members: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            state, pgid = _stat(proc)
            if state == "Z":
                continue
            members[int(proc.name)] = pgid
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                groups.add(pgid)
                members[int(proc.name)] = -1  # marked itself
        except OSError:
            continue
    return sorted(pid for pid, pgid in members.items() if pgid == -1 or pgid in groups)


def describe(pids: list[int]) -> str:
    """pid, process group and command line of each process, for an assertion message."""
    out = []
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out.append(f"pid {pid} pgid {pgid}: {cmd[:200]}")
    return "\n".join(out)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            found = re.fullmatch(r"socket:\[(\d+)\]", target)
            if found:
                inodes.add(found.group(1))
    except OSError:
        pass
    return inodes


def listening(inodes: set[str] | None = None) -> dict[str, int]:
    """TCP sockets in LISTEN state (all, or those with these inodes): inode -> port."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and (inodes is None or fields[9] in inodes):
                found[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def wait_closed(inodes: set[str], timeout: float = 30.0) -> dict[str, int]:
    """Wait until none of these sockets listens; returns those still listening.

    A killed multi-threaded server (etcd, kube-apiserver) shows as a zombie, and so drops out
    of :func:`marked_processes`, as soon as its main thread is gone, while its other threads,
    which share its open files, may still be exiting on a loaded machine. A socket only a
    leaked process holds listens for ever, so the wait cannot hide one.
    """
    deadline = time.monotonic() + timeout
    while (still := listening(inodes)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return still


def listening_of(pids: list[int]) -> dict[str, int]:
    """The listening TCP sockets these processes hold: inode -> port."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    return listening(inodes)


def wait_gone(mark: str, timeout: float = 60.0) -> list[int]:
    """Wait until no marked process is left (the watchdog's grace is 10 s); returns what stays."""
    deadline = time.monotonic() + timeout
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    return marked_processes(mark)


def files_under(root: Path) -> list[str]:
    """Everything left under ``root`` (the launcher's TMPDIR), relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


class Output:
    """The demo's stdout, read in a thread so the test can wait for a line without blocking."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.lines)[-6000:]}")

    def until_quiet(self, quiet: float) -> str:
        """Collect lines until none came for ``quiet`` seconds (or the output ended); all so far."""
        while True:
            try:
                line = self._queue.get(timeout=quiet)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return self.text()

    def text(self) -> str:
        return "".join(self.lines)

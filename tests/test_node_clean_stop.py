"""Node mode stopped any way but Ctrl-C leaves nothing: no namespace, mount, process or key.

``cluster.py up`` is started as a user starts it, with a marker in its environment and a
private ``TMPDIR``; once the node is ready a Pod is started on it (so containerd's shims,
the containers and their mounts exist too). Then the launcher gets SIGTERM, or SIGKILL
(nothing in it runs then: its watchdog must clean up), and afterwards none of these is
left: a process it started (marked, or a descendant, or a container whose root file
system lies in its directory), its network namespace, a mount below its directory or of
its namespace, the directory itself (the control plane's keys, PostgreSQL's data) or
anything else in ``TMPDIR``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.leftovers import MARK, Output, describe, files_under, marked_processes
from support.nodeshell import end, read_instructions, start, user_env

pytestmark = [pytest.mark.node, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"  # the busybox image every node-mode Pod starts with
GONE_TIMEOUT = 120.0  # the watchdog's grace per group is 10 s; containerd stops its tasks first


def _ppid_and_start(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[19]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def run_processes(mark: str) -> dict[int, str]:
    """pid -> start time of every process of the run: marked, and their descendants (containers:
    a container's processes do not carry the marker, but descend from a shim, which does)."""
    table = {int(p.name): _ppid_and_start(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    live = {pid: v for pid, v in table.items() if v is not None}
    ours = set(marked_processes(mark))
    grown = True
    while grown:
        children = {pid for pid, (ppid, _) in live.items() if ppid in ours} - ours
        grown = bool(children)
        ours |= children
    return {pid: live[pid][1] for pid in ours if pid in live}


def still_running(procs: dict[int, str]) -> list[int]:
    """Those of ``procs`` that still run (same pid and start time, not a zombie)."""
    left = []
    for pid, started in procs.items():
        now = _ppid_and_start(pid)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if now is not None and now[1] == started and state != "Z":
            left.append(pid)
    return left


def socket_files(pids: list[int]) -> set[str]:
    """The paths of the Unix sockets these processes hold (containerd's shims bind theirs in /run)."""
    paths: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
            table = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
        except OSError:
            continue
        held = {target for target in map(_readlink, fds) if target}
        for line in table:
            fields = line.split()
            if len(fields) == 8 and f"socket:[{fields[6]}]" in held and fields[7].startswith("/"):
                paths.add(fields[7])
    return paths


def holders(paths: list[str]) -> str:
    """Which live processes hold these socket paths (for a failure message)."""
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    found = [pid for pid in pids if socket_files([pid]) & set(paths)]
    return describe(found) if found else "no live process"


def _readlink(fd: Path) -> str:
    """Where an open file descriptor points; empty once the process closed it."""
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def netns_of(pid: int) -> str:
    """The name under /run/netns of the network namespace ``pid`` runs in."""
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    for entry in Path("/run/netns").iterdir():
        if entry.stat().st_ino == inode:
            return entry.name
    raise AssertionError(f"process {pid} runs in no named network namespace")


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def mounts_of(base: Path, netns: str) -> list[str]:
    lines = Path("/proc/mounts").read_text().splitlines()
    return [line for line in lines if str(base) in line or f"/run/netns/{netns} " in line]


@pytest.fixture
def tmp() -> Iterator[Path]:
    """The launcher's TMPDIR; PostgreSQL's unprivileged user must be able to enter it."""
    path = Path(tempfile.mkdtemp(prefix="ep-nodeleft-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGKILL, id="SIGKILL")]
)
def test_node_up_stops_clean(sig: signal.Signals, tmp: Path) -> None:
    mark = os.urandom(8).hex()
    proc = start(
        [sys.executable, "hack/node/cluster.py", "up"], REPO, user_env(**{MARK: mark, "TMPDIR": str(tmp)})
    )
    try:
        printed = read_instructions(Output(proc))
        assert proc.poll() is None, f"cluster.py up ended:\n{printed}"
        bases = [p for p in tmp.iterdir() if p.is_dir()]
        assert len(bases) == 1, f"expected the run's one directory in TMPDIR: {bases}"
        base = bases[0]
        kubelet = [p for p in marked_processes(mark) if b"kubelet" in Path(f"/proc/{p}/comm").read_bytes()]
        assert kubelet, f"no kubelet runs:\n{describe(marked_processes(mark))}"
        netns = netns_of(kubelet[0])
        kubeconfig = next(base.rglob("admin.kubeconfig"))
        kubectl = ["ip", "netns", "exec", netns, "kubectl", f"--kubeconfig={kubeconfig}"]
        run = [*kubectl, "run", "sleeper", f"--image={SANDBOX_IMAGE}", "--image-pull-policy=Never"]
        subprocess.run([*run, "--restart=Never"], check=True, capture_output=True)
        wait = [*kubectl, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=300s"]
        ready = subprocess.run(wait, capture_output=True, text=True)
        assert ready.returncode == 0, f"the Pod did not start: {ready.stderr}"

        procs = run_processes(mark)
        shims = {p for p in procs if b"containerd-shim" in _cmdline(p)}
        containers = [p for p in procs if (_ppid_and_start(p) or (0, ""))[0] in shims]
        assert containers, f"no container runs:\n{describe(sorted(procs))}"
        assert mounts_of(base, netns), "the run has no mounts (container root file systems)?"
        assert list(base.rglob("*.key")), "no private keys in the run's directory?"
        sockets = socket_files(sorted(procs))
        assert any(not path.startswith(str(base)) for path in sockets), f"no shim sockets? {sockets}"

        proc.send_signal(sig)
        proc.wait(180)
        deadline = time.monotonic() + GONE_TIMEOUT
        while time.monotonic() < deadline and (
            still_running(procs)
            or netns in netns_list()
            or mounts_of(base, netns)
            or base.exists()
            or any(os.path.lexists(path) for path in sockets)
        ):
            time.sleep(1)
        assert still_running(procs) == [], f"{sig.name} left processes:\n{describe(still_running(procs))}"
        assert netns not in netns_list(), f"{sig.name} left the network namespace {netns}"
        assert mounts_of(base, netns) == [], f"{sig.name} left mounts:\n" + "\n".join(mounts_of(base, netns))
        assert files_under(tmp) == [], f"{sig.name} left files (keys, data) in TMPDIR"
        left = sorted(path for path in sockets if os.path.lexists(path))
        assert left == [], f"{sig.name} left socket files: {left}; bound now by: {holders(left)}"
    finally:
        end(proc, signal.SIGKILL)

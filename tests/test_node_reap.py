"""After a SIGKILLed ``cluster.py up`` the watchdog's ``cluster.py reap`` removes the sockets
containerd's shims bound outside the run's directory (in /run/containerd/s, a place containerd
1.6 fixes), and nobody else's.

A shim removes its socket only when containerd shuts it down, so after a SIGKILL the reap must.
It finds them from the ``address`` file of each task's bundle in the run's state directory (the
record containerd itself reads to reconnect to its shims), so a socket is removed even when its
shim has died already or its file table cannot be read at that moment. CI once found one left.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parents[1]
SHIM_SOCKETS = Path("/run/containerd/s")


def _bind_and_leave(path: Path) -> Path:
    """A Unix socket file whose process closed it without removing it (as a killed shim leaves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return path


def _record(base: Path, task_id: str, address: Path) -> None:
    """The bundle's ``address`` file, as the runc shim writes it when it starts."""
    bundle = base / "containerd-state" / "io.containerd.runtime.v2.task" / "k8s.io" / task_id
    bundle.mkdir(parents=True)
    (bundle / "address").write_text(f"unix://{address}")


@pytest.fixture
def sockets() -> Iterator[list[Path]]:
    """The socket files a test makes; removed afterwards, with the shims' directory if the test made it."""
    made: list[Path] = []
    existed = SHIM_SOCKETS.exists()
    yield made
    for path in made:
        path.unlink(missing_ok=True)
    if not existed:
        SHIM_SOCKETS.rmdir()


def test_reap_removes_the_sockets_of_this_runs_shims_and_nobody_elses(
    tmp_path: Path, sockets: list[Path]
) -> None:
    if os.geteuid() != 0:
        pytest.fail("node mode runs as root (containerd's shims bind in /run); run the suite as root")
    base = tmp_path / "epnode-run"
    ours = _bind_and_leave(SHIM_SOCKETS / os.urandom(32).hex())  # its shim is gone already
    other_run = _bind_and_leave(SHIM_SOCKETS / os.urandom(32).hex())  # another node cluster's shim
    elsewhere = _bind_and_leave(tmp_path / "not-a-shim.sock")  # an address outside the shims' place
    sockets += [ours, other_run, elsewhere]
    _record(base, "a" * 64, ours)
    _record(base, "b" * 64, ours)  # a Pod's containers share their sandbox's shim
    _record(base, "c" * 64, elsewhere)

    done = subprocess.run(
        [sys.executable, "hack/node/cluster.py", "reap", str(base), f"emailplan-gone-{os.getpid()}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert not ours.exists(), "the reap left the socket of this run's shim in /run/containerd/s"
    assert other_run.exists(), "the reap removed a socket of a shim this run did not start"
    assert elsewhere.exists(), "the reap removed a file outside /run/containerd/s"

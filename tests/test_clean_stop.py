"""Stopping a launcher any way but Ctrl-C leaves nothing behind.

The demo (``hack/demo.py --keep``, the launcher behind ``hack/demo.sh``) and ``kube.py up``
are started with a marker in their environment and a private ``TMPDIR``, stopped with
SIGTERM or killed with SIGKILL while everything runs, and afterwards no process carries
the marker, none of the TCP ports they listened on is still listening, and their
temporary directories (the SNS stand-in's private key, PostgreSQL's data, etcd's data and
the control plane's keys) are gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.leftovers import (
    MARK,
    Output,
    describe,
    files_under,
    listening_of,
    marked_processes,
    wait_closed,
    wait_gone,
)

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGKILL, id="SIGKILL")]


@dataclass
class Launched:
    proc: subprocess.Popen[str]
    output: Output
    mark: str
    tmp: Path

    def kill_and_check(
        self, sig: signal.Signals, expect_processes: int, key: str = "key.pem", where: Path | None = None
    ) -> None:
        """Send ``sig`` while everything runs; then nothing of the launcher may be left."""
        where = where or self.tmp
        running = marked_processes(self.mark)
        assert len(running) >= expect_processes, f"expected the servers to run:\n{describe(running)}"
        ports = listening_of(running)
        assert ports, "the launcher's servers listen on no port?"
        assert list(where.rglob(key)), f"no private key {key} under {where}?"
        self.proc.send_signal(sig)
        self.proc.wait(120)
        left = wait_gone(self.mark)
        assert left == [], f"{sig.name} left processes behind:\n{describe(left)}"
        still = wait_closed(set(ports))
        assert still == {}, f"{sig.name} left ports listening: {sorted(still.values())}"
        assert files_under(self.tmp) == [], f"{sig.name} left temporary files (keys, data) behind"
        assert files_under(where) == [], f"{sig.name} left {where} behind"


def launch(argv: list[str], cwd: str, tmp: Path) -> Launched:
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, MARK: mark, "TMPDIR": str(tmp), "COLUMNS": "200"},
        start_new_session=True,  # its own process group, like a job started from a shell
    )
    return Launched(proc, Output(proc), mark, tmp)


@pytest.fixture
def launched() -> Iterator[list[Launched]]:
    started: list[Launched] = []
    yield started
    for one in started:
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait(30)


@pytest.fixture
def tmp() -> Iterator[Path]:
    """The launcher's TMPDIR; outside pytest's private tree, which PostgreSQL's user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix="ep-left-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("sig", SIGNALS)
def test_dev_servers_go_with_their_owner(
    sig: signal.Signals, repo_root: str, tmp: Path, tmp_path: Path, launched: list[Launched]
) -> None:
    """PostgreSQL (with its backends), moto and the SNS stand-in's key, started the way the stack does."""
    script = (
        "import signal, sys; sys.path.insert(0, 'hack')\n"
        "from devenv.moto import MotoServer\n"
        "from devenv.postgres import PostgresServer\n"
        "from devenv.procs import stop_like_ctrl_c\n"
        "from devenv.sns import make_identity\n"
        "stop_like_ctrl_c()\n"
        "pg = moto = ident = None\n"
        "try:\n"
        "    pg = PostgresServer().start(); moto = MotoServer().start(); ident = make_identity()\n"
        "    print('ready', flush=True); signal.pause()\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "finally:\n"
        "    pg and pg.cleanup(); moto and moto.cleanup()\n"
        "    import shutil; ident and shutil.rmtree(ident.dir)\n"
    )
    one = launch([sys.executable, "-c", script], repo_root, tmp)
    launched.append(one)
    one.output.wait_for(r"^ready", 120)
    # The postmaster's own children (checkpointer, walwriter, ...) count: grandchildren of the owner.
    one.kill_and_check(sig, expect_processes=3)


@pytest.mark.kube
@pytest.mark.parametrize("sig", SIGNALS)
def test_kube_up_stops_clean(
    sig: signal.Signals, repo_root: str, tmp: Path, tmp_path: Path, launched: list[Launched]
) -> None:
    state = tmp_path / "kube"
    one = launch(
        [sys.executable, "hack/devenv/kube.py", "up", "--dir", str(state)], repo_root, tmp_path / "tmp"
    )
    launched.append(one)
    one.output.wait_for(r"export KUBECONFIG=", 300)
    # kube.py up keeps the control plane's keys and etcd's data in --dir.
    one.kill_and_check(sig, expect_processes=3, key="*.key", where=state)
    assert not state.exists(), f"{sig.name} left the control plane's directory (keys, etcd data)"


@pytest.mark.kube
@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_demo_stops_clean_while_sending(
    sig: signal.Signals, repo_root: str, tmp: Path, tmp_path: Path, launched: list[Launched]
) -> None:
    one = launch(
        [sys.executable, "hack/demo.py", "--non-interactive", "--keep", "--timeout", "600"],
        repo_root,
        tmp,
    )
    launched.append(one)
    # Sending: the API, the operator, the sender pods and the simulated readers all at work.
    one.output.wait_for(r"Sending\s+sent=[1-9]", 900)
    # PostgreSQL, its backends, moto, etcd, kube-apiserver, kube-controller-manager, API, operator, a pod.
    one.kill_and_check(sig, expect_processes=9)

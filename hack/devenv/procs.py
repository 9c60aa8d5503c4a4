"""Child processes that never outlive their owner."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devenv import reaper


def spawn(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, output appended to ``log_path``.

    PR_SET_PDEATHSIG makes the child die with the Python process that started it, and the
    watchdog (``devenv.reaper``) stops the whole group (its own children too) when that
    process ends in any way, so a killed test run or demo leaves no stray servers behind.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent if dies_with_parent() else None,
    )
    log.close()
    reaper.track_group(proc.pid)
    return proc


def dies_with_parent() -> bool:
    """Whether a child started now may carry PR_SET_PDEATHSIG.

    The kernel sends that signal when the *thread* that forked the child ends, not the
    process: a server restarted from a worker thread (``asyncio.to_thread``) would be
    killed as soon as the thread pool retires that thread. Such children rely on the
    watchdog alone, which acts when the whole process ends.
    """
    return not reaper.detached() and threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    _parent_death_signal(signal.SIGKILL)


def _parent_death_signal(sig: signal.Signals) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """A launcher's own stop path for every way it is told to stop, not only Ctrl-C.

    SIGTERM (``kill``, a test's teardown), SIGHUP (the terminal closed) and its parent's death
    (PR_SET_PDEATHSIG, e.g. a killed test run) raise KeyboardInterrupt in the main thread, so
    the ``finally`` that stops everything runs for each of them as for Ctrl-C.
    """
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    _parent_death_signal(signal.SIGTERM)


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)

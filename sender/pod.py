"""A sender pod: N ``emailplan worker`` processes for one plan under one supervisor.

One Python process uses one core; a pod with a 2-CPU limit that runs one worker
leaves half of what it pays for idle. The supervisor starts N plain worker
processes (the default is the pod's CPU limit read from the cgroup, or the cores it may
run on when it has no limit). They need nothing new to share the plan: each
is a worker with its own owner id, so the ledger claim gives every message to
exactly one of them and the shared PostgreSQL bucket holds the plan's rate
across all of them, exactly as it does across pods.

What the pod adds is one face to Kubernetes:

* one SIGTERM story: SIGTERM/SIGINT is passed to every child, each finishes its
  sends in flight, flushes and releases the rest (the worker's own shutdown);
  children still running after their grace period plus a margin are killed;
* one health and metrics endpoint on ``EMAILPLAN_METRICS_PORT``: ``/healthz``
  (200 while the children run or are being restarted, 503 once one crash-loops)
  and ``/metrics`` summed over the children (prometheus_client multiprocess mode);
* a child that dies (OOM kill, crash) is restarted with backoff; the messages it
  held come back through lease expiry and the orphan sweep of its siblings, so
  at most what it had in flight can repeat, as with a crashed pod.

Children are forked from a warm process (``multiprocessing``'s forkserver with the
worker module preloaded): the imports, about 2.4 CPU-seconds of a cold start, are paid
once per pod instead of once per child and per restart, so a restarted child is
claiming work again within a fraction of a second. Each child is named
``emailplan-w<slot>`` (``ps``, ``/proc/<pid>/comm``).

With one process the worker runs in this process, as it always has.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emailplan.runtime.eventloop import install_fast_loop

log = logging.getLogger("emailplan.pod")

CGROUP = Path("/sys/fs/cgroup")
# A child that needs restarting this many times within CRASH_WINDOW makes /healthz fail, so
# Kubernetes restarts the whole pod (and shows the crash loop) instead of the pod hiding it.
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
# The automatic default never exceeds this: a pod without a CPU limit on a 64-core node must not
# open 64 processes' worth of database connections. An explicit count may go higher.
AUTO_MAX_PROCESSES = 8
# After SIGTERM, children get their own shutdown grace plus this margin before SIGKILL.
KILL_MARGIN = 5.0


class PodSettings(BaseSettings):
    """What the supervisor reads from its environment (prefix ``EMAILPLAN_``)."""

    model_config = SettingsConfigDict(env_prefix="EMAILPLAN_", extra="ignore")

    worker_processes: int = Field(0, ge=0, le=256)  # 0: the pod's CPU limit (its cores without a limit)
    metrics_port: int = 9102
    shutdown_grace_seconds: float = 20.0


# ----------------------------------------------------------------------------- decide


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"200000 100000"`` → 2.0; ``"max …"`` → None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (quota -1: no limit)."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The CPU limit of the cgroup this process runs in, or None when there is none."""
    with contextlib.suppress(OSError):
        return parse_cpu_max((root / "cpu.max").read_text())
    with contextlib.suppress(OSError):
        return parse_cfs(
            (root / "cpu" / "cpu.cfs_quota_us").read_text(), (root / "cpu" / "cpu.cfs_period_us").read_text()
        )
    return None


def process_count(requested: int, cpu_limit: float | None, usable_cores: int) -> int:
    """How many worker processes to run.

    An explicit request wins. Otherwise one per CPU of the pod's CPU limit, rounded
    up (a 1.5-CPU limit is better used by two processes than one), or, without a limit,
    one per core this process may run on; never more than those cores nor
    ``AUTO_MAX_PROCESSES``. (Several processes per pod once held a plan's rate worse than
    one: their grants from the shared bucket shrank to a token each. Grants are sized by the
    plan's rate now, ``ratelimit.grant_want``, and the rate benchmark holds with them.)
    """
    if requested > 0:
        return requested
    cpus = usable_cores if cpu_limit is None else min(usable_cores, math.ceil(cpu_limit - 1e-9))
    return max(1, min(AUTO_MAX_PROCESSES, cpus))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def restart_delay(recent_crashes: int) -> float:
    """Backoff before restarting a child that died: 0.5 s, doubling, at most 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, recent_crashes - 1)))


# ----------------------------------------------------------------------------- apply


@dataclass
class Child:
    """One worker process slot: the slot keeps its index across restarts."""

    index: int
    proc: Forked | None = None
    done: bool = False  # exited 0: the plan has nothing left for it (or it was told to stop)
    code: int | None = None  # exit code of its last process
    crashes: list[float] = field(default_factory=list)

    def recent_crashes(self, now: float) -> int:
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW]
        return len(self.crashes)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()
PR_SET_PDEATHSIG = 1


PR_SET_NAME = 15
WORKER_MODULE = "emailplan.sender.workermain"  # what the forkserver imports once for every child


def _prctl(option: int, value: int | bytes) -> None:
    """Linux ``prctl``; nothing where libc or the call is missing."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.prctl(option, value)


def child_name(index: int) -> str:
    """The process name of slot ``index`` (``ps``, ``/proc/<pid>/comm``; at most 15 bytes)."""
    return f"emailplan-w{index}"


def _child_main(args: argparse.Namespace, env: dict[str, str], index: int) -> None:
    """A worker child, forked from the warm forkserver: its own environment, then one worker.

    It gets SIGTERM if its parent dies, so it never outlives the pod: the parent is the
    forkserver, which exits when the supervisor does (its end of the forkserver's pipe
    closes), so a SIGKILLed supervisor still takes its children along.
    """
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    _prctl(PR_SET_NAME, child_name(index).encode()[:15])
    os.environ.clear()
    os.environ.update(env)
    sys.exit(main(args))


class Forked:
    """One forked child, seen through the part of asyncio's ``Process`` the pod uses."""

    def __init__(self, proc: BaseProcess) -> None:
        self._proc = proc
        assert proc.pid is not None
        self.pid: int = proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit code once it ended (negative: the signal that killed it), else None."""
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # never signal a pid that may have been reused
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Wait without a thread: the process's sentinel becomes readable when it ends."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        sentinel = self._proc.sentinel
        loop.add_reader(sentinel, _settle, ended)
        try:
            await ended
        finally:
            loop.remove_reader(sentinel)
        self._proc.join()
        code = self._proc.exitcode
        assert code is not None
        return code


def _settle(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


def warm_starter(metrics_dir: Path) -> multiprocessing.context.BaseContext:
    """The forkserver every child is forked from, started with the worker module imported.

    ``PROMETHEUS_MULTIPROC_DIR`` must be in the environment before prometheus_client is
    imported there (it picks its value store at import), so it is set before the start.
    """
    from multiprocessing import forkserver

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([WORKER_MODULE])
    forkserver.ensure_running()
    return context


class Pod:
    """Starts, watches, restarts and stops the worker processes of one pod."""

    def __init__(
        self,
        settings: PodSettings,
        processes: int,
        child_args: argparse.Namespace,
        metrics_dir: Path,
        starter: multiprocessing.context.BaseContext,
    ) -> None:
        self.settings = settings
        self.children = [Child(i) for i in range(processes)]
        self.child_args = child_args
        self.metrics_dir = metrics_dir
        self.starter = starter
        self.stopping = asyncio.Event()

    def child_env(self, index: int) -> dict[str, str]:
        """This process's environment (with ``PROMETHEUS_MULTIPROC_DIR`` from ``warm_starter``)
        and what makes a child one worker of this pod."""
        env = dict(os.environ)
        env.update(
            {
                "EMAILPLAN_WORKER_PROCESSES": "1",
                "EMAILPLAN_METRICS_PORT": "0",  # the supervisor serves the one endpoint
                "EMAILPLAN_POD_CHILD": str(index),
            }
        )
        return env

    async def start(self, child: Child) -> None:
        proc = self.starter.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(self.child_args, self.child_env(child.index), child.index),
            name=child_name(child.index),
        )
        await asyncio.to_thread(proc.start)  # a round trip to the forkserver, not an exec
        child.proc = Forked(proc)
        log.info("worker process started", extra={"child": child.index, "pid": child.proc.pid})

    def healthy(self) -> bool:
        now = time.monotonic()
        return all(c.recent_crashes(now) < CRASH_LIMIT for c in self.children)

    async def watch(self, child: Child) -> None:
        """Run one slot until the pod stops; restart its worker when it dies.

        A worker exits 0 only when told to stop or, with ``--exit-when-idle``, when the whole
        plan is finished (nothing created, nothing held by anyone): either way the pod's work is
        over, so the first clean exit stops the siblings too (a sibling restarted after a crash
        must not wait forever on a finished plan).
        """
        while True:
            await self.start(child)
            assert child.proc is not None
            if self.stopping.is_set():  # the pod began stopping while this one was being started
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
            code = await child.proc.wait()
            child.code = code
            self._forget_metrics(child.proc.pid)
            if code == 0:
                child.done = True
                log.info("worker process finished; the pod's work is over", extra={"child": child.index})
                self.terminate()
                return
            if self.stopping.is_set():
                if code != -signal.SIGTERM:
                    log.warning(
                        "worker process ended badly while stopping",
                        extra={"child": child.index, "code": code},
                    )
                return
            child.crashes.append(time.monotonic())
            delay = restart_delay(child.recent_crashes(time.monotonic()))
            log.error(
                "worker process died; restarting it (its held messages come back when their leases expire)",
                extra={"child": child.index, "code": code, "restart_in_s": delay},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return

    def _forget_metrics(self, pid: int) -> None:
        with contextlib.suppress(Exception):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    def terminate(self) -> None:
        """SIGTERM to every running child (idempotent): each runs its own graceful shutdown."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("pod stopping: passing SIGTERM to every worker process still running")
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)

    async def run(self) -> int:
        watchers = [asyncio.create_task(self.watch(c), name=f"child-{c.index}") for c in self.children]
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        all_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*watchers))
        await asyncio.wait([stopped, all_done], return_when=asyncio.FIRST_COMPLETED)
        if self.stopping.is_set():
            try:
                await asyncio.wait_for(
                    asyncio.gather(*watchers), self.settings.shutdown_grace_seconds + KILL_MARGIN
                )
            except TimeoutError:
                for child in self.children:
                    if child.proc is not None and child.proc.returncode is None:
                        log.error(
                            "worker process did not stop in time; killing it", extra={"child": child.index}
                        )
                        with contextlib.suppress(ProcessLookupError):
                            child.proc.kill()
                await asyncio.gather(*watchers, return_exceptions=True)
        stopped.cancel()
        codes = [c.code for c in self.children]
        log.info("pod stopped", extra={"exit_codes": codes})
        # Stopped by the pod's own SIGTERM (e.g. still starting when the plan finished) is clean.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


async def serve_health(pod: Pod, port: int) -> object:
    """``/healthz`` and ``/metrics`` (summed over the children) on ``port``; returns the runner."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(pod.metrics_dir))  # type: ignore[no-untyped-call]

    async def healthz(_: web.Request) -> web.Response:
        now = time.monotonic()
        body = {
            "processes": len(pod.children),
            "running": sum(1 for c in pod.children if c.proc is not None and c.proc.returncode is None),
            "finished": sum(1 for c in pod.children if c.done),
            "recent_crashes": [c.recent_crashes(now) for c in pod.children],
        }
        return web.json_response(body, status=200 if pod.healthy() else 503)

    async def metrics(_: web.Request) -> web.Response:
        data = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - pods listen on all interfaces
    log.info("pod health and metrics listening", extra={"port": port})
    return runner


async def supervise(settings: PodSettings, processes: int, child_args: argparse.Namespace) -> int:
    metrics_dir = Path(tempfile.mkdtemp(prefix="emailplan-metrics-"))
    starter = await asyncio.to_thread(warm_starter, metrics_dir)
    pod = Pod(settings, processes, child_args, metrics_dir, starter)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pod.terminate)
    runner = await serve_health(pod, settings.metrics_port) if settings.metrics_port > 0 else None
    try:
        return await pod.run()
    finally:
        if runner is not None:
            from aiohttp import web

            assert isinstance(runner, web.AppRunner)
            await runner.cleanup()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def child_args(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments of one child: this same ``emailplan worker``, one process."""
    return argparse.Namespace(**{**vars(args), "processes": 1, "func": None})


def main(args: argparse.Namespace) -> int:
    """CLI entry (``emailplan worker``): one worker in this process, or a pod of N."""
    from emailplan.runtime.logsetup import setup_logging

    settings = PodSettings()
    requested = getattr(args, "processes", None)
    processes = process_count(
        requested if requested is not None else settings.worker_processes, cgroup_cpu_limit(), usable_cores()
    )
    install_fast_loop()
    if processes == 1:
        from emailplan.sender import workermain

        return workermain.main(args)
    setup_logging()
    from emailplan.sender.workermain import startup

    if startup(args) is None:  # a configuration no child could run with: say it once, exit
        return 2
    log.info("sender pod starting", extra={"processes": processes})
    return asyncio.run(supervise(settings, processes, child_args(args)))

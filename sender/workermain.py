"""The worker process: its settings and plan, the run until SIGTERM, and the exit code.

``pod`` runs it (one process, or a child per core forked from a warm forkserver that
preloads this module); ``worker`` holds the pipeline it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import uuid

from emailplan.runtime.logsetup import setup_logging
from emailplan.runtime.metrics import serve_metrics
from emailplan.runtime.sentry import init_sentry
from emailplan.sender.db import make_engine
from emailplan.sender.ses import SesClient
from emailplan.sender.settings import SenderSettings
from emailplan.sender.worker import Worker
from emailplan.sender.workqueue import WorkQueue

log = logging.getLogger("emailplan.worker")
# A worker task died of a bug: not "the plan is finished" (0), so the pod restarts it and shows it.
EXIT_CRASHED = 1


async def run_worker(settings: SenderSettings, plan_id: uuid.UUID, *, exit_when_idle: bool = False) -> bool:
    """Run until SIGTERM/SIGINT (or, with ``exit_when_idle``, until the plan is finished).

    True when it stopped cleanly; False when a task crashed (a bug), so the process exits
    non-zero and whoever runs it (the pod supervisor, Kubernetes) sees a crash, not a finish.
    """
    engine = make_engine(settings, pool_size=min(settings.db_pool_size, 5), pre_ping=False)
    try:
        async with (
            WorkQueue.open(settings) as queue,
            SesClient(settings, max_connections=settings.worker_concurrency * 2) as ses,
        ):
            worker = Worker(settings, plan_id, engine, queue, ses, exit_when_idle=exit_when_idle)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stopping.set)
            await worker.run()
            return not worker.crashed
    finally:
        await engine.dispose()


def startup(args: argparse.Namespace) -> tuple[SenderSettings, uuid.UUID] | None:
    """A worker's settings and plan, or None after logging why it cannot start.

    Missing secrets raise ``StartupError`` (the CLI prints it in one line). The pod
    supervisor runs the same checks before it starts any child, so a misconfigured pod
    says so once and exits instead of restarting children that can never run.
    """
    settings = SenderSettings()
    settings.require_secrets("token_key")
    raw_plan = getattr(args, "plan_id", None) or settings.plan_id
    if not raw_plan:
        log.error("no plan: set EMAILPLAN_PLAN_ID or pass --plan-id")
        return None
    try:
        plan_id = uuid.UUID(str(raw_plan))
    except ValueError:
        log.error("plan id is not a UUID", extra={"plan": str(raw_plan)[:64]})
        return None
    return settings, plan_id


def main(args: argparse.Namespace) -> int:
    """CLI entry (``emailplan worker``): settings from the environment, plan from --plan-id or env."""
    setup_logging()
    started = startup(args)
    if started is None:
        return 2
    settings, plan_id = started
    init_sentry(settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None, component="worker")
    serve_metrics(settings.metrics_port)
    exit_when_idle = bool(getattr(args, "exit_when_idle", False)) or settings.exit_when_idle
    clean = asyncio.run(run_worker(settings, plan_id, exit_when_idle=exit_when_idle))
    return 0 if clean else EXIT_CRASHED

"""The events and stats API: application factory and the ``emailplan api`` entry point.

One process holds one database engine, one aiohttp ClientSession (SNS
certificates, SubscribeURL confirmations) and one SQS client (S3 lists open
their own client for the length of a load),
all opened in the app's cleanup context and closed in reverse order on
shutdown, after the open buffer has been flushed, so a rolling update loses
no pixel hits.

The application is two parts: the public one (tracking, SNS, probes, the
OpenAPI document) on the root app, and the administration endpoints (plans,
statistics, suppressions) in a sub-app mounted at ``/v1`` whose one middleware
checks the API key, so no admin handler can be added without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.contract import httpapi
from emailplan.contract.health import Dependency
from emailplan.contract.route import VERSION_PREFIX, Route
from emailplan.runtime.eventloop import install_fast_loop
from emailplan.runtime.logsetup import setup_logging
from emailplan.runtime.sentry import init_sentry
from emailplan.sender import sns
from emailplan.sender.accountgate import AccountGate
from emailplan.sender.api import (
    failures,
    followups,
    health,
    openapi,
    plans,
    snsroute,
    stats,
    suppressions,
    tracking,
)
from emailplan.sender.api.auth import api_key_middleware
from emailplan.sender.api.dependencies import raising
from emailplan.sender.api.errors import error_middleware
from emailplan.sender.api.eventbatch import EventBatcher
from emailplan.sender.api.openbuffer import OpenBuffer
from emailplan.sender.api.state import STATE, ApiState
from emailplan.sender.db import make_engine
from emailplan.sender.settings import SenderSettings
from emailplan.sender.store import eventstore

log = logging.getLogger(__name__)

CLIENT_MAX_SIZE = 1024 * 1024  # bodies read whole; uploads stream and have their own limit
DB_CHECK_SECONDS = 5.0  # how long start-up waits for the database to answer before warning


HANDLERS: dict[Route, Handler] = {
    httpapi.OPEN_PIXEL: tracking.open_pixel,
    httpapi.CLICK: tracking.click,
    httpapi.UNSUBSCRIBE_PAGE: tracking.unsubscribe_page,
    httpapi.UNSUBSCRIBE: tracking.unsubscribe,
    httpapi.SNS_RESULT: snsroute.sns_result,
    httpapi.PLAN_COUNTS: stats.count,
    httpapi.SENT_COUNT: stats.sent,
    httpapi.SUPPRESSIONS: suppressions.add,
    httpapi.PUT_PLAN: plans.put_plan,
    httpapi.GET_PLAN: plans.get_plan,
    httpapi.UPLOAD_RECIPIENTS: plans.upload,
    httpapi.COMPLETE_RECIPIENTS: plans.complete,
    httpapi.LOAD_S3: plans.load_s3,
    httpapi.LOAD_FROM_PLAN: followups.load_from_plan,
    httpapi.RETRY_PLAN: followups.retry,
    httpapi.LIST_FAILURES: failures.list_failures,
    httpapi.STOP_PLAN: plans.stop,
    httpapi.HEALTHZ: health.healthz,
    httpapi.READYZ: health.readyz,
    httpapi.METRICS: health.metrics,
    httpapi.OPENAPI: openapi.serve,
}


def add_routes(app: web.Application, admin: web.Application) -> None:
    """Register every route of the table: keyed ones on the admin sub-app, the rest on ``app``.

    A route without a handler stops start-up (a documented endpoint that answers 404 is a lie),
    and no handler is registered except through the table, so the router and the generated
    OpenAPI document hold the same paths.
    """
    missing = [route.operation_id for route in httpapi.ROUTES if route not in HANDLERS]
    if missing:
        raise RuntimeError(f"routes without a handler: {', '.join(missing)}")
    for route in httpapi.ROUTES:
        (admin if route.keyed else app).router.add_route(route.method, route.relative_path, HANDLERS[route])


def client_ssl_context(settings: SenderSettings) -> ssl.SSLContext:
    """System CAs, plus the test CA bundle when ``sns_ca_file`` is set."""
    ctx = ssl.create_default_context()
    if settings.sns_ca_file:
        ctx.load_verify_locations(cafile=settings.sns_ca_file)
    return ctx


def create_app(
    settings: SenderSettings | None = None, *, engine: AsyncEngine | None = None, with_aws: bool = True
) -> web.Application:
    """Build the application; resources are opened when it starts (``cleanup_ctx``).

    ``engine`` lets tests share an engine; ``with_aws=False`` skips the SQS
    client (endpoints that need the work queue then answer 503).
    Refuses (:class:`StartupError`) without a token key and an API key.
    """
    settings = settings or SenderSettings()
    settings.require_secrets("token_key", "api_key")
    app = web.Application(middlewares=[error_middleware], client_max_size=CLIENT_MAX_SIZE)
    admin = web.Application(middlewares=[api_key_middleware], client_max_size=CLIENT_MAX_SIZE)
    add_routes(app, admin)
    app.add_subapp(VERSION_PREFIX, admin)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            own_engine = engine is None
            db = engine or make_engine(settings)
            if own_engine:
                stack.push_async_callback(db.dispose)
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl_context(settings), limit=20),
                headers={"User-Agent": "emailplan-api"},
            )
            stack.push_async_callback(http.close)
            verifier = _sns_verifier(settings, http)
            hot = eventstore.HotConnections(db, size=max(2, settings.db_pool_size - 2))
            stack.push_async_callback(hot.close)
            opens = _open_buffer(settings, hot)
            state = ApiState(
                settings=settings,
                engine=db,
                hot=hot,
                http=http,
                verifier=verifier,
                opens=opens,
                events=EventBatcher(hot, max_inflight=max(1, settings.sns_write_concurrency)),
                token_key=settings.token_key.get_secret_value().encode(),
                api_key=settings.api_key.get_secret_value().encode(),
            )
            state.health.add(Dependency.DATABASE, raising(lambda: eventstore.ping(db)))
            if with_aws:
                await _open_aws(stack, state)
            app[STATE] = state
            opens.start()
            monitor = asyncio.get_running_loop().create_task(state.health.run(), name="dependency-probes")
            stack.push_async_callback(_cancel, monitor)
            await _report_start(state)
            try:
                yield
            finally:
                await _drain(state)

    app.cleanup_ctx.append(resources)
    return app


def _sns_verifier(settings: SenderSettings, http: aiohttp.ClientSession) -> sns.SnsVerifier:
    """The SNS signature verifier, fetching signing certificates through the API's HTTP session."""

    async def fetch(url: str) -> bytes:
        pem: bytes = await snsroute.fetch_certificate(http, url)
        return pem

    return sns.SnsVerifier(
        sns.CertificateCache(fetch),
        topic_arns=settings.sns_topic_arns,
        host_pattern=settings.sns_cert_host_pattern,
        extra_cert_prefixes=settings.sns_extra_trusted_cert_prefixes,
    )


def _open_buffer(settings: SenderSettings, hot: eventstore.HotConnections) -> OpenBuffer:
    """Tracking-pixel opens, written in batches on the hot connections."""

    async def write(hits: Sequence[eventstore.OpenHit]) -> eventstore.OpensResult:
        return await eventstore.record_opens(hot, hits, settings.open_machine_window_seconds)

    return OpenBuffer(write, max_rows=settings.open_flush_rows, max_seconds=settings.open_flush_seconds)


async def _report_start(state: ApiState) -> None:
    """Say "api started" only when the database answers; otherwise one warning naming the cause.

    The API still serves (the database may come back, and probes must answer),
    but an operator reading the log must not believe all is well: ``/readyz``
    answers 503 with the same reason until the database answers.
    """
    extra = {"topics": len(state.settings.sns_topic_arns)}
    try:
        await asyncio.wait_for(eventstore.ping(state.engine), timeout=DB_CHECK_SECONDS)
    except Exception as exc:  # noqa: BLE001 - every failure here means "not reachable"
        log.warning(
            f"api serving WITHOUT its database: cannot reach {state.settings.database_target()} "
            f"({type(exc).__name__}); endpoints that need it answer 503 until it answers, as /readyz does",
            extra=extra,
        )
        return
    log.info("api started", extra=extra)


async def _open_aws(stack: contextlib.AsyncExitStack, state: ApiState) -> None:
    """The work queue, and the probes of SQS and SES (their health rides in the plan view)."""
    from emailplan.sender.ses import SesClient
    from emailplan.sender.workqueue import WorkQueue

    queue = await stack.enter_async_context(WorkQueue.open(state.settings))
    state.queue = queue
    state.health.add(Dependency.QUEUE, raising(queue.ping))
    try:
        client = SesClient(state.settings, max_connections=2)
    except RuntimeError as exc:  # no AWS credentials here: the API itself never sends, so only say so
        log.warning(f"SES health not probed: {exc}")
        return
    ses = await stack.enter_async_context(client)
    state.health.add(Dependency.SES, ses.unreachable)
    # The account (24-hour quota, SES's review) rides in every plan view: the operator shows it.
    state.account = AccountGate(state.engine, state.settings)
    stopping = asyncio.Event()
    watch = asyncio.get_running_loop().create_task(state.account.run(stopping), name="account")
    stack.push_async_callback(_cancel, watch)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _drain(state: ApiState) -> None:
    """Graceful shutdown: flush buffered opens, let background loads finish briefly, then cancel."""
    await state.opens.close()
    await state.events.close()
    if state.background:
        _done, pending = await asyncio.wait(set(state.background), timeout=10)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
    log.info("api stopped", extra={"opens_written": state.opens.written_human})


async def _freeze_heap(app: web.Application) -> None:
    """Move everything loaded at start-up out of the garbage collector's view.

    Botocore models, SQLAlchemy and the routes live as long as the process;
    freezing them keeps full collections short, which the pixel's tail
    latency depends on. Only the real process does this (not test apps).
    """
    gc.freeze()


def main(args: argparse.Namespace) -> int:
    """``emailplan api``: serve until SIGTERM/SIGINT, then shut down gracefully."""
    setup_logging()
    settings = SenderSettings()
    settings.require_secrets("token_key", "api_key")
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None
    if dsn:
        from sentry_sdk.integrations.aiohttp import AioHttpIntegration

        init_sentry(dsn, component="api", integrations=[AioHttpIntegration()])
    host = getattr(args, "host", None) or settings.host
    port = getattr(args, "port", None) or settings.port
    log.info("api listening", extra={"host": host, "port": port})
    install_fast_loop()
    app = create_app(settings)
    app.on_startup.append(_freeze_heap)  # after cleanup_ctx has opened the resources
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=20,
        handle_signals=True,
    )
    return 0

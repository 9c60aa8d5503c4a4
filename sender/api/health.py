"""Probes and metrics: ``/healthz`` (process alive), ``/readyz`` (database answers), ``/metrics``."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from emailplan.contract.health import Dependency
from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of
from emailplan.sender.store import eventstore

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers; the body lists every dependency's health (SQS, SES too)."""
    state = state_of(request)
    try:
        await asyncio.wait_for(eventstore.ping(state.engine), timeout=5)
    except Exception as exc:
        target = state.settings.database_target()
        log.warning(f"not ready: cannot reach {target}", extra={"error": type(exc).__name__})
        state.health.record(Dependency.DATABASE, f"cannot connect ({type(exc).__name__})")
        # public: where it is stays in the log
        raise ApiError(503, "database unreachable", dependency=Dependency.DATABASE) from exc
    state.health.record(Dependency.DATABASE, None)
    health = [h.model_dump(mode="json") for h in state.health.snapshot()]
    return web.json_response({"status": "ready", "dependencies": health})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

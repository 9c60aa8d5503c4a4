"""What every handler shares: settings, the one engine, the one HTTP session, buffers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from emailplan.sender.accountgate import AccountGate
from emailplan.sender.api.dependencies import DependencyMonitor
from emailplan.sender.api.eventbatch import EventBatcher
from emailplan.sender.api.openbuffer import OpenBuffer
from emailplan.sender.settings import SenderSettings
from emailplan.sender.sns import SnsVerifier
from emailplan.sender.store.eventstore import HotConnections
from emailplan.sender.store.plans import QueueSink


@dataclass
class ApiState:
    settings: SenderSettings
    engine: AsyncEngine
    hot: HotConnections  # held connections of ``engine`` for the SNS and pixel write paths
    http: aiohttp.ClientSession
    verifier: SnsVerifier
    opens: OpenBuffer
    events: EventBatcher
    token_key: bytes
    api_key: bytes
    queue: QueueSink | None = None
    health: DependencyMonitor = field(default_factory=DependencyMonitor)
    account: AccountGate | None = None  # the SES account's quota and standing (None: no AWS here)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; shutdown waits for it (or cancels it)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


STATE = web.AppKey("emailplan_state", ApiState)


def state_of(request: web.Request) -> ApiState:
    return request.config_dict[STATE]  # set on the root app, read from sub-apps too

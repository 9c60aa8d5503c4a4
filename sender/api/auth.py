"""The API key of the stats and administration endpoints (``x-api-key``).

Compared in constant time; the key is never logged or echoed.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of

R = TypeVar("R", bound=web.StreamResponse)


def require_api_key(handler: Callable[[web.Request], Awaitable[R]]) -> Callable[[web.Request], Awaitable[R]]:
    """Wrap a handler so it answers 401 unless ``x-api-key`` matches."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> R:
        given = request.headers.get("x-api-key", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, state_of(request).api_key):
            raise ApiError(401, "missing or wrong x-api-key", "x-api-key")
        return await handler(request)

    return wrapped

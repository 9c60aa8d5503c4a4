"""The API key of the administration sub-app (``x-api-key``), checked once as middleware.

Every handler of the admin sub-app (plans, statistics, suppressions) is behind
it, so a new endpoint there cannot forget the check. Compared in constant
time; the key is never logged or echoed. An empty configured key never
matches (settings refuse to start without one, this is the second lock).
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from emailplan.sender.api.errors import ApiError
from emailplan.sender.api.state import state_of


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 401 unless ``x-api-key`` matches the configured key.

    A path that matches no route is answered first (404/405, JSON through the error
    middleware): "no such endpoint" is not a secret (the OpenAPI document lists them
    all), and a 401 there sends a caller hunting for a key problem that does not exist.
    """
    missing = request.match_info.http_exception
    if missing is not None:
        raise missing
    expected = state_of(request).api_key
    given = request.headers.get("x-api-key", "").encode("utf-8", "replace")
    if not expected or not hmac.compare_digest(given, expected):
        raise ApiError(401, "missing or wrong x-api-key", "x-api-key")
    return await handler(request)

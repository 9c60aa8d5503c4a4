"""JSON errors for every endpoint: ``{"error": {"field"?, "message"}}``.

Client mistakes get a 4xx with a message that names the offending field;
only faults of our own (database down, a bug) answer 5xx, and those never
echo request data or secrets back.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by handlers for a client mistake (or a known server state like 503)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, str] = {"message": message}
    if field is not None:
        body = {"field": field, "message": message}
    return web.Response(
        status=status,
        body=json.dumps({"error": body}).encode(),
        content_type="application/json",
        headers=headers,
    )


_KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into the JSON shape; unexpected exceptions become a bare 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        return error_response(exc.status, exc.reason, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal error")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, or 413 as soon as it is known to exceed ``limit`` bytes.

    Reads until end of stream (a single ``read(n)`` may return only the first
    chunk of a chunked or slow body).
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    buf = bytearray()
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, f"body larger than {limit} bytes")

"""JSON errors for every endpoint: ``{"error": {"field"?, "message"}}``.

Client mistakes get a 4xx with a message that names the offending field;
only faults of our own answer 5xx, and those never echo request data or
secrets back. A database that cannot be reached is a 503 with a JSON reason
(and ``Retry-After``) from every endpoint, not a 500 with a traceback in the
log: it is a state of the system, and callers should retry.
"""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from emailplan.contract.health import ERROR_DEPENDENCY_KEY, Dependency
from emailplan.sender.api.state import STATE

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by handlers for a client mistake (or a known server state like 503)."""

    def __init__(
        self, status: int, message: str, field: str | None = None, dependency: Dependency | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.dependency = dependency


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    dependency: Dependency | None = None,
) -> web.Response:
    body: dict[str, str] = {"message": message}
    if field is not None:
        body = {"field": field, "message": message}
    if dependency is not None:  # a 503 names what is down, for the operator's DataPlaneAvailable
        body[ERROR_DEPENDENCY_KEY] = dependency.value
    return web.Response(
        status=status,
        body=json.dumps({"error": body}).encode(),
        content_type="application/json",
        headers=headers,
    )


_KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")
DATABASE_DOWN = "database unreachable; try again shortly"
QUEUE_DOWN = "work queue (SQS) unavailable; try again shortly"

# What asyncpg and SQLAlchemy raise when there is no usable connection (refused,
# reset, timed out, server shutting down) as opposed to a query of ours failing.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    PoolTimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (wrapped by SQLAlchemy or not)."""
    if isinstance(exc, DBAPIError):
        return (
            bool(exc.connection_invalidated)
            or isinstance(exc.orig, _CONNECTION_ERRORS)
            or (isinstance(exc.orig, Exception) and isinstance(exc.orig.__cause__, _CONNECTION_ERRORS))
        )
    return isinstance(exc, _CONNECTION_ERRORS)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into the JSON shape; unexpected exceptions become a bare 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.field, dependency=exc.dependency)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        return error_response(exc.status, exc.reason, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            raise  # the client hung up: nobody to answer (a reset from PostgreSQL is answered below)
        if database_unreachable(exc):
            log.warning("database unreachable", extra={"path": request.path, "error": type(exc).__name__})
            _report(request, Dependency.DATABASE, f"cannot connect ({type(exc).__name__})")
            return error_response(
                503, DATABASE_DOWN, headers={"Retry-After": "5"}, dependency=Dependency.DATABASE
            )
        if isinstance(exc, (BotoCoreError, ClientError)):  # the only AWS a request calls is the queue
            log.warning("work queue unavailable", extra={"path": request.path, "error": type(exc).__name__})
            _report(request, Dependency.QUEUE, f"SQS call failed ({type(exc).__name__})")
            return error_response(503, QUEUE_DOWN, headers={"Retry-After": "5"}, dependency=Dependency.QUEUE)
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal error")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _report(request: web.Request, dependency: Dependency, problem: str) -> None:
    """Tell the dependency monitor at once (the API's state may be absent in a broken start)."""
    state = request.config_dict.get(STATE)
    if state is not None:
        state.health.record(dependency, problem)


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

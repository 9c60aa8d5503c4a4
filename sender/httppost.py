"""A small HTTP/1.1 keep-alive client for the one request shape SES needs: a POST, an answer.

The raw sender makes one SendEmail call per email. Through aiohttp that call cost about a
fifth of a worker's CPU, spread over twenty small functions (request and response objects,
header multidicts, timers, the payload writer): general machinery for cookies, redirects,
streaming, compression and proxies, none of which a signed JSON POST to SES uses. Here a
request is one ``bytes`` written to a kept-alive connection, and the answer is parsed by a
protocol that looks for the end of the headers and reads ``Content-Length`` (or chunked)
bytes. Connections are reused LIFO, at most ``limit`` open; TLS is asyncio's with the system
trust store and SNI.

Every failure of the connection or the protocol raises ``OSError`` (``HttpError`` is one),
or ``TimeoutError``: the caller treats both as transient. A connection that failed, or that
the server asked to close, is never reused.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # response status line and headers
MAX_BODY = 16 * 1024 * 1024
KEEPALIVE = 30.0  # seconds a connection may sit idle and still be reused
GRACE = 1.0  # the last part of a request's deadline, always time the process ran (``_expire``)


class HttpError(ConnectionError):
    """The server's answer is not HTTP/1.x this client understands, or the connection broke."""


@dataclass(frozen=True)
class Answer:
    """A response: status, headers (names lower-cased; the last of repeated ones), body."""

    status: int
    headers: dict[str, str]
    body: bytes


def _head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    """(status, headers, HTTP/1.0) of a response head (without its blank line)."""
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(parts[1]), headers, parts[0] == b"HTTP/1.0"


class _Protocol(asyncio.Protocol):
    """One connection: buffers what arrives and completes the waiting request's answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: Exception | None = None
        self.timed_out = False
        self._graced = False
        self._deadline: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        """Start the request's deadline: after ``seconds``, waiting for bytes raises TimeoutError."""
        self.timed_out = self._graced = False
        self._deadline = asyncio.get_running_loop().call_later(max(0.0, seconds - GRACE), self._expire)

    def disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """The deadline: first a warning shot, then, :data:`GRACE` later, the real one.

        A process that was not running for a while (stopped, frozen, starved of CPU) wakes
        with its deadlines past and the answers that came meanwhile still in its sockets; a
        stopped and continued process may even run its timers before its next poll. Giving up
        on such an answer would send the email again: SES took the first one. The last
        :data:`GRACE` seconds of a deadline are therefore measured from when the process ran
        its first part, so they are always time in which the answer can be read.
        """
        if not self._graced:
            self._graced = True
            self._deadline = asyncio.get_running_loop().call_later(GRACE, self._expire)
            return
        self._deadline = None
        self.timed_out = True
        self._wake()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes (or the end); raises if the connection ended first."""
        if self.timed_out:
            raise TimeoutError("no answer within the request's deadline")
        if self.closed:
            raise HttpError(f"connection closed mid-response: {self.error or 'EOF'}")
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.timed_out:
            raise TimeoutError("no answer within the request's deadline")

    async def answer(self) -> tuple[Answer, bool]:
        """Read one response; (answer, whether the connection may be reused)."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise HttpError("response head too long")
            await self.more()
        status, headers, http10 = _head(bytes(self.buf[:end]))
        del self.buf[: end + 4]
        keep = not http10 and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif (length := headers.get("content-length")) is not None:
            if not length.isdigit() or int(length) > MAX_BODY:
                raise HttpError(f"bad Content-Length {length[:20]!r}")
            while len(self.buf) < int(length):
                await self.more()
            body = bytes(self.buf[: int(length)])
            del self.buf[: int(length)]
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no length: the body runs to the end of the connection
            while not self.closed:
                await self.more()
            body, keep = bytes(self.buf), False
            self.buf.clear()
        return Answer(status, headers, body), keep and not self.closed and not self.buf

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                await self.more()
            size_text = bytes(self.buf[:eol]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise HttpError(f"bad chunk size {size_text[:20]!r}") from exc
            if len(body) + size > MAX_BODY:
                raise HttpError("response body too long")
            while len(self.buf) < eol + 2 + size + 2:
                await self.more()
            body += self.buf[eol + 2 : eol + 2 + size]
            del self.buf[: eol + 2 + size + 2]
            if size == 0:  # trailers are not used by SES; a last-chunk ends the body
                return bytes(body)


class HttpPoster:
    """POSTs to one origin (``scheme://host[:port]``) over at most ``limit`` kept-alive connections."""

    def __init__(self, origin: str, *, limit: int = 64, timeout: float = 30.0, connect_timeout: float = 5.0):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"origin must be http(s)://host[:port], got {origin!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        default = 443 if parts.scheme == "https" else 80
        self.host_header = self._host if self._port == default else f"{self._host}:{self._port}"
        self._idle: list[tuple[_Protocol, float]] = []  # with when each went idle (monotonic)
        self._slots = asyncio.Semaphore(limit)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self.connections_opened = 0  # for tests and benchmarks: keep-alive at work

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(
                _Protocol,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        self.connections_opened += 1
        return protocol

    def _idle_connection(self) -> _Protocol | None:
        """The most recently used open connection; older ones than ``KEEPALIVE`` are closed
        (a server drops idle connections after a while, and we would learn it only by writing)."""
        now = time.monotonic()
        while self._idle:
            protocol, since = self._idle.pop()
            if not protocol.closed and not protocol.buf and now - since < KEEPALIVE:
                return protocol
            self._drop(protocol)
        return None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """One POST of ``body`` with ``headers`` (Host and Content-Length are added).

        Never repeated here: a POST the server may have acted on is the caller's to retry
        (an email must not go out twice because a connection broke after SES took it).
        """
        head = [f"POST {path} HTTP/1.1\r\nHost: {self.host_header}\r\nContent-Length: {len(body)}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        head.append("\r\n")
        request = "".join(head).encode("latin-1") + body
        async with self._slots:
            protocol = self._idle_connection() or await self._connect()
            protocol.arm(self._timeout)
            try:
                assert protocol.transport is not None
                protocol.transport.write(request)
                answer, keep = await protocol.answer()
            except BaseException:
                self._drop(protocol)
                raise
            finally:
                protocol.disarm()
            if keep:
                self._idle.append((protocol, time.monotonic()))
            else:
                self._drop(protocol)
            return answer

    @staticmethod
    def _drop(protocol: _Protocol) -> None:
        if protocol.transport is not None:
            protocol.transport.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for protocol, _ in idle:
            self._drop(protocol)
        await asyncio.sleep(0)  # let the transports finish closing

"""An SES endpoint in front of moto that fails the sends to chosen addresses, as a flaky SES would.

Sends (SES v2 SendEmail) whose raw message names an address in ``failing`` are
answered ``500 InternalFailure``, every other request is passed to moto unchanged.
The sender treats a 500 as transient: it tries again with backoff and, after its
last attempt, fails the message with ``gave up after N attempts``. Clearing
``failing`` makes SES healthy again.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class FlakySes:
    """A local HTTP server; ``url`` is the SES endpoint to give the senders."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self._local = threading.local()  # one kept-alive connection to moto per serving thread
        self.failing: set[str] = set()
        self.refused: Counter[str] = Counter()  # sends answered with a 500, by address
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FlakySes:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_for(self, body: bytes) -> str | None:
        """The failing address this send is for, if any."""
        if not self.failing:
            return None
        try:
            raw = (
                base64.b64decode(json.loads(body)["Content"]["Raw"]["Data"])
                .decode("utf-8", "replace")
                .lower()
            )
        except (ValueError, KeyError, TypeError):
            return None
        with self._lock:
            return next((a for a in self.failing if a in raw), None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                failing = flaky.fail_for(body) if self.path.startswith("/v2/email/outbound-emails") else None
                if failing is not None:
                    with flaky._lock:
                        flaky.refused[failing] += 1
                    self._answer(
                        500, {"x-amzn-ErrorType": "InternalFailure"}, b'{"message":"Internal failure"}'
                    )
                    return
                self._forward("POST", body)

            def do_GET(self) -> None:
                self._forward("GET", None)

            def _forward(self, method: str, body: bytes | None) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn = getattr(flaky._local, "conn", None)
                if conn is None:
                    conn = flaky._local.conn = http.client.HTTPConnection(
                        flaky.upstream.hostname or "127.0.0.1", flaky.upstream.port, timeout=30
                    )
                try:
                    conn.request(method, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                except (OSError, http.client.HTTPException):
                    conn.close()  # reconnects on the next request
                    raise
                self._answer(r.status, dict(r.getheaders()), data)

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in HOP_HEADERS:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

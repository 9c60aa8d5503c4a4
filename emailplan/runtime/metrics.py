"""Prometheus exposition for processes that have no HTTP server of their own."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - pods listen on all interfaces
    """Expose ``/metrics`` on ``port`` in a background thread (0 disables it)."""
    if port <= 0:
        return
    start_http_server(port, addr=addr)
    log.info("metrics listening", extra={"port": port})

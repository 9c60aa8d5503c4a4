"""The event loop every long-running process serves on."""

from __future__ import annotations

import asyncio
import contextlib


def install_fast_loop() -> None:
    """uvloop for the process's event loops when it is installed.

    It is a dependency, measured in docs/benchmarks.md: the worker sends more per CPU-second
    on it, and the API answers the pixel and SNS with less. A source checkout without it still
    runs on the standard loop.
    """
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

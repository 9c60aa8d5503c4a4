"""The health of what the API depends on (database, SQS, SES), probed in the background.

The operator shows an outage on the EmailPlan only if the data plane says what is
down: the plan view and ``/readyz`` carry :meth:`DependencyMonitor.snapshot`. Each
dependency keeps the time its current state began, so "down since 12:03" is the
moment the API first saw it fail, not the moment someone asked. Requests that find
the database down (``errors.error_middleware``) report it here too, so the state
changes at the first failed request, not at the next probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from emailplan.contract.health import Dependency, DependencyHealth

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5.0

Probe = Callable[[], Awaitable[str | None]]
"""One check: None when the dependency answers, else what is wrong (no host, no credential)."""


class DependencyMonitor:
    """The last known state of each probed dependency, and since when it holds."""

    def __init__(self) -> None:
        self._probes: dict[Dependency, Probe] = {}
        self._health: dict[Dependency, DependencyHealth] = {}

    def add(self, dependency: Dependency, probe: Probe) -> None:
        self._probes[dependency] = probe
        self._health[dependency] = DependencyHealth(
            dependency=dependency, available=True, since=datetime.now(UTC)
        )

    def record(self, dependency: Dependency, problem: str | None) -> None:
        """Remember the outcome of a probe (or of a request); ``since`` moves only on a change."""
        old = self._health.get(dependency)
        available = problem is None
        if old is not None and old.available == available:
            if problem is not None and old.message != problem:
                self._health[dependency] = old.model_copy(update={"message": problem})
            return
        self._health[dependency] = DependencyHealth(
            dependency=dependency, available=available, since=datetime.now(UTC), message=problem or ""
        )
        if old is not None:
            log_at = log.warning if problem else log.info
            log_at(
                f"{dependency.words} {'unavailable' if problem else 'available again'}",
                extra={"dependency": dependency.value, "problem": problem or ""},
            )

    def snapshot(self) -> list[DependencyHealth]:
        return [self._health[d] for d in Dependency if d in self._health]

    def down(self, dependency: Dependency) -> DependencyHealth | None:
        health = self._health.get(dependency)
        return health if health is not None and not health.available else None

    async def probe_all(self) -> None:
        for dependency, probe in list(self._probes.items()):
            try:
                problem = await asyncio.wait_for(probe(), timeout=PROBE_TIMEOUT_SECONDS)
            except TimeoutError:
                problem = f"no answer within {PROBE_TIMEOUT_SECONDS:g}s"
            except Exception as exc:  # noqa: BLE001 - any failure of a probe means "down"; say which kind
                problem = f"{type(exc).__name__}"
            self.record(dependency, problem)

    async def run(self) -> None:
        """Probe every ``PROBE_SECONDS`` until cancelled."""
        while True:
            with contextlib.suppress(Exception):
                await self.probe_all()
            await asyncio.sleep(PROBE_SECONDS)


def raising(check: Callable[[], Awaitable[object]]) -> Probe:
    """A probe from a call that raises when the dependency is down."""

    async def probe() -> str | None:
        await check()
        return None

    return probe

"""The operator's "now": real time, shifted in development by a test-controlled offset.

Send windows, rollout holds and the A/B decision wait for hours; tests cannot. With
``EMAILPLAN_DEV_MODE=1`` and ``EMAILPLAN_CLOCK_OFFSET_FILE`` set, every pass adds the
number of seconds in that file to the real time (the file may change between passes;
missing or unreadable means no shift). This is the only place the operator reads the
time for a decision: ``handlers.reconcile`` calls it once per pass into ``Observed.now``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from emailplan.operator.settings import OperatorSettings


def offset_seconds(settings: OperatorSettings) -> float:
    if not (settings.dev_mode and settings.clock_offset_file):
        return 0.0
    try:
        return float(Path(settings.clock_offset_file).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def now(settings: OperatorSettings) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=offset_seconds(settings))

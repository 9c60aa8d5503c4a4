"""A local stack whose operator runs on a test clock the test moves forward (dev mode only).

``EMAILPLAN_CLOCK_OFFSET_FILE`` holds the seconds the operator adds to real time, so
hours of waiting (a follow-up's ``after``) pass without sleeping.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.postgres import PostgresServer
from devenv.stack import StackOptions
from support.e2e import API_KEY, Stack


class ClockStack(Stack):
    """The stack with the operator's test clock."""

    clock_file: Path

    def operator_now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset())

    def advance(self, seconds: float) -> None:
        self.clock_file.write_text(str(self._offset() + seconds))

    def _offset(self) -> float:
        return float(self.clock_file.read_text() or 0) if self.clock_file.exists() else 0.0


def start_clock_stack(
    kube: KubeCluster,
    postgres: PostgresServer,
    moto: MotoServer,
    prefix: str,
    data_env: dict[str, str] | None = None,
) -> ClockStack:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    clock_file = base / "clock-offset"
    clock_file.write_text("0")
    options = StackOptions(
        api_key=API_KEY,
        data_env=data_env or {},
        operator_env={"EMAILPLAN_CLOCK_OFFSET_FILE": str(clock_file), "EMAILPLAN_DEV_MODE": "1"},
    )
    st = ClockStack(base, options, postgres=postgres, moto=moto, kube=kube)
    st.clock_file = clock_file
    st.start()
    return st

"""Refusals at process start: one line that names the cause and the fix, never a traceback.

A process that cannot run as configured (a missing key, a bad address) must
stop before doing anything, with a message an operator can act on. Raised from
settings and entry points; ``emailplan.cli`` prints it as ``emailplan: error: ...``
and exits 2. Deliberately not a ``ValueError``: pydantic passes it through
unchanged instead of folding it into a multi-line validation report.
"""

from __future__ import annotations

DEV_MODE_ENV = "EMAILPLAN_DEV_MODE"


class StartupError(RuntimeError):
    """The process cannot start; ``str(exc)`` is the one line to print."""


def missing_secret(env_name: str) -> StartupError:
    """The refusal for a secret that has no value (the value itself is never printed)."""
    return StartupError(
        f"{env_name} is not set: give it a long random value (a Secret in the chart), "
        f"or set {DEV_MODE_ENV}=1 to use the built-in development key on a local machine"
    )

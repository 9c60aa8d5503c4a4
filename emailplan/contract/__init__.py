"""Names and models fixed by the contracts between the parts (DESIGN.md), kept in one place.

Everything that crosses a boundary between operator, data plane, CLI and demo is
defined in this package once and imported by every side. Modules here import
nothing from ``emailplan.operator`` or ``emailplan.sender`` (import-linter).

The operator writes these counts into the EmailPlan status, the API serves them
from ``/v1/results/count/{planId}``, and the CLI and the demo print them; all of
them read the list from here so a new count is added once.
"""

from emailplan.contract.counts import STATUS_COUNTS

__all__ = ["STATUS_COUNTS"]

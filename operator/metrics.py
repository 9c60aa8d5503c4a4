"""Prometheus metrics of the operator (served by emailplan.runtime.metrics)."""

from __future__ import annotations

from collections import Counter as _Tally

from prometheus_client import Counter, Gauge, Histogram

from emailplan.operator.decide import Phase

PLANS = Gauge("emailplan_operator_plans", "EmailPlans handled by this operator, by phase", ["phase"])
RECONCILE_ERRORS = Counter(
    "emailplan_operator_reconcile_errors_total", "Reconcile passes that failed, by kind of error", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "emailplan_operator_reconcile_seconds",
    "Duration of one reconcile pass of one plan",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STATUS_PATCHES = Counter("emailplan_operator_status_patches_total", "Status subresource patches sent")


def publish_phases(phases: dict[str, str]) -> None:
    """Set the per-phase gauge from the operator's current view (every phase, zeros included)."""
    tally = _Tally(phases.values())
    for phase in Phase:
        PLANS.labels(phase=phase.value).set(tally.get(phase.value, 0))

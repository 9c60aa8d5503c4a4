"""Prometheus metrics of the operator (served by emailplan.runtime.metrics)."""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from emailplan.contract import STATUS_COUNTS
from emailplan.contract.spec_status import Phase

PLANS = Gauge("emailplan_operator_plans", "EmailPlans handled by this operator, by phase", ["phase"])
RECONCILE_ERRORS = Counter(
    "emailplan_operator_reconcile_errors_total", "Reconcile passes that failed, by kind of error", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "emailplan_operator_reconcile_seconds",
    "Duration of one reconcile pass of one plan",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PLAN_MESSAGES = Gauge(
    "emailplan_plan_messages",
    "Counts of each EmailPlan as its status shows them: per-plan bounce and complaint rates "
    "(the API's event counters carry no plan label)",
    ["namespace", "plan", "count"],
)
STATUS_PATCHES = Counter("emailplan_operator_status_patches_total", "Status subresource patches sent")


def publish_phases(phases: dict[str, str]) -> None:
    """Set the per-phase gauge from the operator's current view (every phase, zeros included)."""
    tally = _Tally(phases.values())
    for phase in Phase:
        PLANS.labels(phase=phase.value).set(tally.get(phase.value, 0))


def publish_counts(namespace: str, plan: str, status: Mapping[str, Any]) -> None:
    """Set the plan's count gauges from the status the operator last wrote."""
    for name in STATUS_COUNTS:
        value = status.get(name)
        if isinstance(value, int):
            PLAN_MESSAGES.labels(namespace=namespace, plan=plan, count=name).set(value)


def forget_counts(namespace: str, plan: str) -> None:
    """Drop a deleted plan's series, so dashboards do not show it forever."""
    for name in STATUS_COUNTS:
        try:
            PLAN_MESSAGES.remove(namespace, plan, name)
        except KeyError:
            pass

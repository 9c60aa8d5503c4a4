"""Builders for the operator's pure decision tests: an observed pass and the data plane's view of it.

Shared by the decision table tests and the GitOps health-check tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from emailplan.contract.plans import LoadJob, LoadSourceKind, LoadState, PlanState, PlanView
from emailplan.operator.campaign import Steering
from emailplan.operator.decide import Observed, payload_for
from emailplan.operator.planspec import Templates, read_spec
from emailplan.operator.settings import OperatorSettings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

SPEC: dict[str, Any] = {
    "from": "A <a@example.com>",
    "subject": "s",
    "text": "t",
    "rate": {"perSecond": 100},
    "senders": {"perPodRate": 50, "maxReplicas": 4},
    "recipients": {"s3": {"bucket": "lists", "key": "a.csv", "format": "csv"}},
}
PLAN_ID = "3f1c1b9e-0000-4000-8000-000000000001"


def observed(**kw: Any) -> Observed:
    spec = kw.pop("spec", None) or read_spec({**SPEC, **kw.pop("spec_patch", {})}, OperatorSettings())
    args: dict[str, Any] = dict(
        name="launch",
        namespace="mail",
        generation=kw.pop("generation", 1),
        spec=spec,
        status={},
        now=NOW,
        templates=Templates("s", None, "t"),
        status_interval=5.0,
    )
    args.update(kw)
    return Observed(**args)


def view(
    *,
    state: PlanState = PlanState.READY,
    loaded: bool = True,
    suspended: bool = False,
    counts: dict[str, int] | None = None,
    load: LoadJob | None = None,
    spec: dict[str, Any] | None = None,
    release: float = 100.0,
    winner: str | None = None,
    released_backlog: int = 0,
    variant_counts: list[dict[str, Any]] | None = None,
    failures: list[dict[str, Any]] | None = None,
) -> PlanView:
    """The plan view the data plane would answer after registering ``payload_for`` of the spec."""
    o = observed(spec_patch=spec or {})
    payload = payload_for(o, suspended=suspended, release=release, steer=Steering(winner=winner))
    return PlanView.model_validate(
        {
            **payload.model_dump(mode="json"),
            "id": PLAN_ID,
            "state": state,
            "recipientsLoaded": loaded,
            "counts": counts if counts is not None else {"total": 300, "created": 300},
            "load": load,
            "releasedBacklog": released_backlog,
            "variantCounts": variant_counts or [],
            "failures": failures or [],
        }
    )


def job(state: LoadState, **kw: Any) -> LoadJob:
    return LoadJob(state=state, source=LoadSourceKind.S3, updated_at=NOW, **kw)

"""When a follow-up plan takes its audience, as a pure rule with table tests.

A follow-up (``spec.recipients.fromPlan``) waits until its source plan has
completed and ``after`` has passed since; then the data plane takes the audience
from the ledger. The source is observed once a pass (its uid, phase and
``completedAt``); everything here is decided from that and the pass's clock, so
an operator restart or a takeover changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emailplan.contract.followups import FromPlanSource
from emailplan.contract.plans import LoadJob, LoadSourceKind
from emailplan.contract.spec_followup import FromPlanSpec
from emailplan.contract.spec_status import Phase
from emailplan.operator import rules as d


@dataclass(frozen=True)
class SourcePlan:
    """The source EmailPlan as one pass saw it."""

    uid: str
    phase: str | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True)
class Gate:
    """Whether the audience may be taken now; else why not and when to look again."""

    ready: bool
    message: str = ""
    takes_at: datetime | None = None  # the source's completion plus ``after``, once known
    source: FromPlanSource | None = None  # what to ask the data plane for (set when ready)


def read_source(obj: Mapping[str, Any] | None) -> SourcePlan | None:
    """The source plan from its Kubernetes object (None: it does not exist)."""
    if obj is None:
        return None
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    return SourcePlan(
        uid=str(meta.get("uid") or ""),
        phase=status.get("phase"),
        completed_at=d.parse_time(status.get("completedAt")),
    )


def gate(spec: FromPlanSpec, source: SourcePlan | None, now: datetime) -> Gate:
    """Ready once the source completed and ``after`` passed; else the message says what it waits for."""
    name = spec.name
    if source is None:
        return Gate(False, f"waiting for EmailPlan {name} (not found in this namespace) to complete")
    if source.phase != Phase.COMPLETED.value:
        return Gate(False, f"waiting for EmailPlan {name} to complete (it is {source.phase or 'Pending'})")
    takes_at = (source.completed_at or now) + spec.delay
    if now < takes_at:
        return Gate(
            False,
            f"waiting until {d.format_time(takes_at)} ({spec.after} after {name} completed) to take "
            f"its {spec.outcome.value} recipients",
            takes_at,
        )
    try:
        plan_id = uuid.UUID(source.uid)
    except ValueError:
        return Gate(False, f"waiting for EmailPlan {name} to be registered")
    return Gate(True, takes_at=takes_at, source=FromPlanSource(plan_id=plan_id, outcome=spec.outcome))


def audience_status(
    spec: FromPlanSpec, g: Gate, job: LoadJob | None, shown: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``status.audience``: the source, when the audience is taken and, once taken, how many matched.

    ``shown`` is the audience the status showed: a time once known stays shown (the source
    plan may be deleted after the follow-up took its audience).
    """
    out: dict[str, Any] = {"plan": spec.name, "outcome": spec.outcome.value}
    before = (shown or {}).get("takesAt")
    out["takesAt"] = d.format_time(g.takes_at) if g.takes_at is not None else before
    taken = job is not None and job.source is LoadSourceKind.FROM_PLAN and job.from_plan is not None
    if taken and job is not None:
        out["matched"] = job.accepted + job.suppressed
        out["suppressed"] = job.suppressed
        out["takenAt"] = d.format_time(job.updated_at) if job.updated_at is not None else None
    return out

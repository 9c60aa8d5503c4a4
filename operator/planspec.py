"""A typed reading of an EmailPlan's spec, with the CRD's defaults.

The API server fills defaults through the CRD schema, but objects created before a
default existed (or by a client that skipped defaulting) may lack them, so the
same defaults live here once and every reader goes through this view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND
from emailplan.operator.decisions import parse_time
from emailplan.operator.settings import OperatorSettings

DEFAULT_MAX_REPLICAS = 4


@dataclass(frozen=True)
class Templates:
    """The three templates of a message, after ``templateRef`` was resolved."""

    subject: str
    html: str | None
    text: str | None


@dataclass(frozen=True)
class PlanSpec:
    """The fields the operator acts on."""

    sender: str
    reply_to: list[str]
    subject: str
    html: str | None
    text: str | None
    template_ref: dict[str, Any] | None
    recipients: dict[str, Any]
    start_at: datetime | None
    rate: float
    max_replicas: int
    per_pod_rate: float
    suspend: bool
    tracking: dict[str, bool]
    unsubscribe: bool
    ses: dict[str, Any]
    max_bounce_rate: float
    max_complaint_rate: float
    min_sample: int
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def recipients_source(self) -> str:
        """``inline``, ``configMapRef``, ``s3`` or ``""`` when none is set."""
        for key in ("inline", "configMapRef", "s3"):
            if self.recipients.get(key):
                return key
        return ""


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = spec.get(name)
    return value if isinstance(value, Mapping) else {}


def read_spec(spec: Mapping[str, Any], settings: OperatorSettings) -> PlanSpec:
    """Read the spec with defaults; never raises on missing optional fields.

    Where the plan says nothing, the operator's settings decide (the chart's
    ``sender.perPodRate`` and safety defaults reach plans through them).
    """
    rate = _section(spec, "rate")
    senders = _section(spec, "senders")
    safety = _section(spec, "safety")
    tracking = _section(spec, "tracking")
    ses = _section(spec, "ses")
    template_ref = spec.get("templateRef")
    return PlanSpec(
        sender=str(spec.get("from") or ""),
        reply_to=[str(a) for a in spec.get("replyTo") or []],
        subject=str(spec.get("subject") or ""),
        html=spec.get("html"),
        text=spec.get("text"),
        template_ref=dict(template_ref) if isinstance(template_ref, Mapping) else None,
        recipients=dict(_section(spec, "recipients")),
        start_at=parse_time(_section(spec, "schedule").get("startAt")),
        rate=float(rate.get("perSecond") or DEFAULT_RATE_PER_SECOND),
        max_replicas=int(senders.get("maxReplicas") or DEFAULT_MAX_REPLICAS),
        per_pod_rate=float(senders.get("perPodRate") or settings.default_per_pod_rate),
        suspend=bool(spec.get("suspend", False)),
        tracking={"opens": bool(tracking.get("opens", True)), "clicks": bool(tracking.get("clicks", False))},
        unsubscribe=bool(_section(spec, "unsubscribe").get("enabled", True)),
        ses={"configurationSet": ses.get("configurationSet"), "tags": dict(ses.get("tags") or {})},
        max_bounce_rate=float(safety.get("maxBounceRate", settings.default_max_bounce_rate)),
        max_complaint_rate=float(safety.get("maxComplaintRate", settings.default_max_complaint_rate)),
        min_sample=int(safety.get("minSample", settings.breaker_min_sample)),
        raw=spec,
    )

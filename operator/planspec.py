"""A typed reading of an EmailPlan's spec, with the CRD's defaults, and the plan JSON for the data plane.

The API server fills defaults through the CRD schema, but objects created before a
default existed (or by a client that skipped defaulting) may lack them, so the
same defaults live here once and every reader goes through this view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emailplan.operator.decisions import format_time, parse_time

DEFAULT_RATE = 14.0
DEFAULT_MAX_REPLICAS = 4
DEFAULT_PER_POD_RATE = 50.0


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


def read_spec(
    spec: Mapping[str, Any],
    *,
    default_max_bounce_rate: float = 0.05,
    default_max_complaint_rate: float = 0.001,
    default_min_sample: int = 100,
) -> PlanSpec:
    """Read the spec with defaults; never raises on missing optional fields."""
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
        rate=float(rate.get("perSecond") or DEFAULT_RATE),
        max_replicas=int(senders.get("maxReplicas") or DEFAULT_MAX_REPLICAS),
        per_pod_rate=float(senders.get("perPodRate") or DEFAULT_PER_POD_RATE),
        suspend=bool(spec.get("suspend", False)),
        tracking={"opens": bool(tracking.get("opens", True)), "clicks": bool(tracking.get("clicks", False))},
        unsubscribe=bool(_section(spec, "unsubscribe").get("enabled", True)),
        ses={"configurationSet": ses.get("configurationSet"), "tags": dict(ses.get("tags") or {})},
        max_bounce_rate=float(safety.get("maxBounceRate", default_max_bounce_rate)),
        max_complaint_rate=float(safety.get("maxComplaintRate", default_max_complaint_rate)),
        min_sample=int(safety.get("minSample", default_min_sample)),
        raw=spec,
    )


def plan_payload(
    *, name: str, namespace: str, spec: PlanSpec, templates: Templates, suspended: bool
) -> dict[str, Any]:
    """The plan JSON of ``PUT /v1/plans/{uid}`` (docs/architecture.md).

    ``suspended`` is the effective state (the user's ``suspend`` or the circuit
    breaker), so one PUT carries every change the running pods must see.
    """
    return {
        "name": name,
        "namespace": namespace,
        "from": spec.sender,
        "replyTo": spec.reply_to,
        "subject": templates.subject,
        "html": templates.html,
        "text": templates.text,
        "ratePerSecond": spec.rate,
        "startAt": format_time(spec.start_at) if spec.start_at else None,
        "suspended": suspended,
        "tracking": spec.tracking,
        "unsubscribe": {"enabled": spec.unsubscribe},
        "ses": spec.ses,
    }

"""A typed reading of an EmailPlan's spec, with the CRD's defaults.

The API server fills defaults through the CRD schema, but objects created before a
default existed (or by a client that skipped defaulting) may lack them, so the
same defaults live here once and every reader goes through this view.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any

from emailplan.contract.plans import DEFAULT_RATE_PER_SECOND, SendApi
from emailplan.operator.decisions import parse_time
from emailplan.operator.settings import OperatorSettings

DEFAULT_MAX_REPLICAS = 4

# Campaign features (issue 15). The CRD generator reads these, so a default is written once.
DURATION_PATTERN = r"^([0-9]+(h|m|s))+$"  # Go-style, whole units: 4h, 15m, 1h30m, 90s
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"  # HH:MM, 24-hour
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # index = datetime.weekday()
DEFAULT_TIME_ZONE = "UTC"
DEFAULT_TEST_PERCENT = 10.0
DEFAULT_DECIDE_AFTER = "4h"
DEFAULT_AB_MIN_SAMPLE = 100
MAX_ROLLOUT_STEPS = 10


class AbMetric(StrEnum):
    """What makes a variant the winner; opens are human opens only (machine opens never count)."""

    UNIQUE_OPENS = "uniqueOpens"  # unique human opens per sent message
    UNIQUE_CLICKS = "uniqueClicks"  # unique clickers per sent message
    CLICKS_PER_DELIVERED = "clicksPerDelivered"  # unique clickers per delivered message


class AbFallback(StrEnum):
    """What happens when ``decideAfter`` has passed and the data cannot name a winner."""

    FIRST_VARIANT = "firstVariant"  # send the first listed variant to the rest
    PAUSE = "pause"  # suspend until a person sets spec.abTest.winner


DEFAULT_METRIC = AbMetric.UNIQUE_OPENS
DEFAULT_FALLBACK = AbFallback.PAUSE


@dataclass(frozen=True)
class AbTest:
    test_percent: float
    metric: AbMetric
    decide_after: timedelta
    min_sample: int
    fallback: AbFallback
    winner: str | None  # set by a person: decides (or overrides) at once


@dataclass(frozen=True)
class RolloutStep:
    percent: float
    hold: timedelta


@dataclass(frozen=True)
class Rollout:
    steps: tuple[RolloutStep, ...]
    max_bounce_rate: float
    max_complaint_rate: float


@dataclass(frozen=True)
class SendWindow:
    """Sending is allowed on ``days`` from ``start`` to ``end`` local time; ``end <= start`` crosses midnight.

    A window that crosses midnight belongs to the day it opens (Fri 22:00-02:00 ends Saturday 02:00).
    """

    days: frozenset[int]  # datetime.weekday() numbers
    start: time
    end: time
    time_zone: str

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.time_zone}"


def parse_duration(value: Any) -> timedelta | None:
    """``1h30m`` → 90 minutes; None when the text is not a duration (the CRD pattern refuses it)."""
    text = str(value or "")
    if not re.fullmatch(DURATION_PATTERN, text):
        return None
    unit = {"h": 3600, "m": 60, "s": 1}
    return timedelta(seconds=sum(int(n) * unit[u] for n, u in re.findall(r"([0-9]+)([hms])", text)))


def parse_clock(value: Any) -> time | None:
    text = str(value or "")
    if not re.fullmatch(CLOCK_PATTERN, text):
        return None
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


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
    variants: tuple[dict[str, Any], ...] = ()  # raw; validation checks them, payload_for types them
    ab_test: AbTest | None = None
    rollout: Rollout | None = None
    window: SendWindow | None = None
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
    max_bounce_rate = float(safety.get("maxBounceRate", settings.default_max_bounce_rate))
    max_complaint_rate = float(safety.get("maxComplaintRate", settings.default_max_complaint_rate))
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
        ses={
            "configurationSet": ses.get("configurationSet"),
            "tags": dict(ses.get("tags") or {}),
            "sendApi": str(ses.get("sendApi") or SendApi.RAW.value),
        },
        max_bounce_rate=max_bounce_rate,
        max_complaint_rate=max_complaint_rate,
        min_sample=int(safety.get("minSample", settings.breaker_min_sample)),
        variants=tuple(dict(v) for v in spec.get("variants") or [] if isinstance(v, Mapping)),
        ab_test=_ab_test(spec),
        rollout=_rollout(spec, max_bounce_rate, max_complaint_rate),
        window=_window(_section(_section(spec, "schedule"), "window")),
        raw=spec,
    )


def _ab_test(spec: Mapping[str, Any]) -> AbTest | None:
    """Variants alone run an A/B test with the defaults; no variants, no test."""
    if not spec.get("variants"):
        return None
    ab = _section(spec, "abTest")
    winner = ab.get("winner")
    return AbTest(
        test_percent=float(ab.get("testPercent", DEFAULT_TEST_PERCENT)),
        metric=AbMetric(ab.get("metric") or DEFAULT_METRIC),
        decide_after=parse_duration(ab.get("decideAfter") or DEFAULT_DECIDE_AFTER) or timedelta(0),
        min_sample=int(ab.get("minSample", DEFAULT_AB_MIN_SAMPLE)),
        fallback=AbFallback(ab.get("fallback") or DEFAULT_FALLBACK),
        winner=str(winner) if winner else None,
    )


def _rollout(spec: Mapping[str, Any], max_bounce_rate: float, max_complaint_rate: float) -> Rollout | None:
    """Steps as written; the gate's thresholds default to the plan's circuit breaker (spec.safety)."""
    rollout = _section(spec, "rollout")
    steps = tuple(
        RolloutStep(
            percent=float(s.get("percent") or 0), hold=parse_duration(s.get("hold") or "0s") or timedelta(0)
        )
        for s in rollout.get("steps") or []
        if isinstance(s, Mapping)
    )
    if not steps:
        return None
    return Rollout(
        steps=steps,
        max_bounce_rate=float(rollout.get("maxBounceRate", max_bounce_rate)),
        max_complaint_rate=float(rollout.get("maxComplaintRate", max_complaint_rate)),
    )


def _window(window: Mapping[str, Any]) -> SendWindow | None:
    start, end = parse_clock(window.get("from")), parse_clock(window.get("to"))
    if start is None or end is None:
        return None
    days = window.get("days") or WEEKDAYS
    return SendWindow(
        days=frozenset(WEEKDAYS.index(d) for d in days if d in WEEKDAYS),
        start=start,
        end=end,
        time_zone=str(window.get("timeZone") or DEFAULT_TIME_ZONE),
    )

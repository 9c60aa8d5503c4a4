"""The step from a parsed EmailPlan spec and the operator's settings to what ``decide`` needs.

The spec is parsed once into ``contract.spec.EmailPlanSpec`` (the one definition
the CRD is generated from; its defaults are the CRD's). What the plan leaves to
the operator (breaker thresholds, ``senders.*``) is None in the model and is
filled here from the settings, so the chart's values reach every plan that says nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any

from pydantic import ValidationError

from emailplan.contract.plans import Tracking, Variant
from emailplan.contract.spec import EmailPlanSpec, Recipients, RecipientSource, SesSpec, TemplateRef
from emailplan.contract.spec_campaign import (
    RECIPIENT_ZONE,
    WEEKDAYS,
    AbFallback,
    AbMetric,
    AbTestSpec,
    parse_clock,
    parse_duration,
)
from emailplan.operator.settings import OperatorSettings

__all__ = ["AbFallback", "AbMetric", "parse_clock", "parse_duration"]  # re-exported for campaign


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
    time_zone: str  # the plan's zone; with ``per_recipient`` the fallback zone of rows without one
    per_recipient: bool = False  # schedule.window.timeZone recipient: each row in its own zone

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[d] for d in sorted(self.days))
        zone = f"recipient's zone (fallback {self.time_zone})" if self.per_recipient else self.time_zone
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {zone}"

    def in_zone(self, zone: str) -> SendWindow:
        """The same window read in ``zone`` (one recipient's)."""
        return replace(self, time_zone=zone, per_recipient=False)


@dataclass(frozen=True)
class Templates:
    """The three templates of a message, after ``templateRef`` was resolved."""

    subject: str
    html: str | None
    text: str | None


@dataclass(frozen=True)
class PlanSpec:
    """The parsed spec (``model``) plus what the operator's settings decide where the plan is silent."""

    model: EmailPlanSpec
    rate: float
    max_replicas: int
    per_pod_rate: float
    max_bounce_rate: float
    max_complaint_rate: float
    min_sample: int
    ab_test: AbTest | None = None
    rollout: Rollout | None = None
    window: SendWindow | None = None
    problems: tuple[str, ...] = ()  # the spec does not parse (an older CRD let it in): nothing else holds

    @property
    def sender(self) -> str:
        return self.model.sender

    @property
    def reply_to(self) -> list[str]:
        return list(self.model.reply_to)

    @property
    def subject(self) -> str:
        return self.model.subject

    @property
    def html(self) -> str | None:
        return self.model.html

    @property
    def text(self) -> str | None:
        return self.model.text

    @property
    def template_ref(self) -> TemplateRef | None:
        return self.model.template_ref

    @property
    def recipients(self) -> Recipients:
        return self.model.recipients

    @property
    def recipients_source(self) -> RecipientSource | None:
        return self.model.recipients.source

    @property
    def start_at(self) -> datetime | None:
        return self.model.schedule.start_at

    @property
    def suspend(self) -> bool:
        return self.model.suspend

    @property
    def tracking(self) -> Tracking:
        return self.model.tracking

    @property
    def unsubscribe(self) -> bool:
        return self.model.unsubscribe.enabled

    @property
    def ses(self) -> SesSpec:
        return self.model.ses

    @property
    def variants(self) -> tuple[Variant, ...]:
        return tuple(self.model.variants or ())


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def read_spec(raw: Mapping[str, Any], settings: OperatorSettings) -> PlanSpec:
    """Parse once and resolve; never raises: a spec that does not parse carries its ``problems``."""
    try:
        model = EmailPlanSpec.model_validate(dict(raw))
    except ValidationError as exc:
        blank = EmailPlanSpec.model_construct(sender="", subject="", recipients=Recipients.model_construct())
        return resolve(blank, settings, problems=spec_problems(exc))
    return resolve(model, settings)


def spec_problems(exc: ValidationError) -> tuple[str, ...]:
    """pydantic's errors in the words of kubectl: ``variants[1].subject: ...``."""
    out = []
    for err in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(message if not where or message.startswith(where) else f"{where}: {message}")
    return tuple(out)


def resolve(model: EmailPlanSpec, settings: OperatorSettings, problems: tuple[str, ...] = ()) -> PlanSpec:
    """The model plus the settings' defaults (the chart's ``sender.*`` values) where the plan says nothing."""
    safety, senders = model.safety, model.senders
    bounce = _or(safety.max_bounce_rate, settings.default_max_bounce_rate)
    complaint = _or(safety.max_complaint_rate, settings.default_max_complaint_rate)
    return PlanSpec(
        model=model,
        rate=model.rate.per_second,
        max_replicas=int(_or(senders.max_replicas, settings.default_max_replicas)),
        per_pod_rate=_or(senders.per_pod_rate, settings.default_per_pod_rate),
        max_bounce_rate=bounce,
        max_complaint_rate=complaint,
        min_sample=int(_or(safety.min_sample, settings.breaker_min_sample)),
        ab_test=_ab_test(model),
        rollout=_rollout(model, bounce, complaint),
        window=_window(model),
        problems=problems,
    )


def _ab_test(model: EmailPlanSpec) -> AbTest | None:
    """Variants alone run an A/B test with the model's defaults; no variants, no test."""
    if not model.variants:
        return None
    ab = model.ab_test or AbTestSpec()
    return AbTest(
        test_percent=ab.test_percent,
        metric=ab.metric,
        decide_after=parse_duration(ab.decide_after) or timedelta(0),
        min_sample=ab.min_sample,
        fallback=ab.fallback,
        winner=ab.winner or None,
    )


def _rollout(model: EmailPlanSpec, max_bounce_rate: float, max_complaint_rate: float) -> Rollout | None:
    """Steps as written; the gate's thresholds default to the plan's circuit breaker."""
    if model.rollout is None:
        return None
    return Rollout(
        steps=tuple(
            RolloutStep(percent=s.percent, hold=parse_duration(s.hold) or timedelta(0))
            for s in model.rollout.steps
        ),
        max_bounce_rate=_or(model.rollout.max_bounce_rate, max_bounce_rate),
        max_complaint_rate=_or(model.rollout.max_complaint_rate, max_complaint_rate),
    )


def _window(model: EmailPlanSpec) -> SendWindow | None:
    window = model.schedule.window
    if window is None:
        return None
    start, end = parse_clock(window.start), parse_clock(window.end)
    if start is None or end is None:
        return None
    per_recipient = window.time_zone == RECIPIENT_ZONE
    return SendWindow(
        days=frozenset(WEEKDAYS.index(d) for d in window.days or WEEKDAYS),
        start=start,
        end=end,
        time_zone=window.fallback_time_zone if per_recipient else window.time_zone,
        per_recipient=per_recipient,
    )

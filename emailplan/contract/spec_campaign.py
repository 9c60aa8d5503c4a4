"""The campaign parts of an EmailPlan spec: A/B test, progressive rollout, send window.

Part of the one definition of the resource (``contract.spec``): the CRD, its
defaults and the operator's reading all come from these models.
"""

from __future__ import annotations

import itertools
import re
from datetime import time, timedelta
from enum import StrEnum

from pydantic import Field, field_validator

from emailplan.contract.kubemarks import SET_LIST, Rule, Ruled, Schema, cel, matches
from emailplan.contract.wire import Wire

DURATION_PATTERN = r"^([0-9]+(h|m|s))+$"  # Go-style, whole units: 4h, 15m, 1h30m, 90s
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"  # HH:MM, 24-hour
MAX_ROLLOUT_STEPS = 10
DEFAULT_TIME_ZONE = "UTC"
RECIPIENT_ZONE = "recipient"  # schedule.window.timeZone: each recipient's own zone (local-time delivery)


class Weekday(StrEnum):
    """Day of week."""

    MON = "Mon"
    TUE = "Tue"
    WED = "Wed"
    THU = "Thu"
    FRI = "Fri"
    SAT = "Sat"
    SUN = "Sun"


WEEKDAYS = tuple(d.value for d in Weekday)  # index = datetime.weekday()


class AbMetric(StrEnum):
    """What makes a variant the winner; opens are human opens only (machine opens never count)."""

    UNIQUE_OPENS = "uniqueOpens"  # unique human opens per sent message
    UNIQUE_CLICKS = "uniqueClicks"  # unique clickers per sent message
    CLICKS_PER_DELIVERED = "clicksPerDelivered"  # unique clickers per delivered message


class AbFallback(StrEnum):
    """What happens when ``decideAfter`` has passed and the data cannot name a winner."""

    FIRST_VARIANT = "firstVariant"  # send the first listed variant to the rest
    PAUSE = "pause"  # suspend until a person sets spec.abTest.winner


def parse_duration(value: str | None) -> timedelta | None:
    """``1h30m`` → 90 minutes; None when the text is not a duration (the CRD refuses it)."""
    text = value or ""
    if not re.fullmatch(DURATION_PATTERN, text):
        return None
    unit = {"h": 3600, "m": 60, "s": 1}
    return timedelta(seconds=sum(int(n) * unit[u] for n, u in re.findall(r"([0-9]+)([hms])", text)))


def parse_clock(value: str | None) -> time | None:
    text = value or ""
    if not re.fullmatch(CLOCK_PATTERN, text):
        return None
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _duration_rule(field: str) -> Schema:
    return matches(DURATION_PATTERN, f"{field} must be a duration like 15m, 4h or 1h30m (units h, m, s)")


def _clock_rule(field: str) -> Schema:
    return matches(CLOCK_PATTERN, f"{field} must be a time of day HH:MM, e.g. 09:00")


class AbTestSpec(Wire):
    """A/B test of the variants: a test cohort first, then the winner for the rest of the list."""

    test_percent: float = Field(
        10.0, gt=0, le=100, description="share of the list in the test cohort, split evenly over the variants"
    )
    metric: AbMetric = Field(
        AbMetric.UNIQUE_OPENS,
        description="what picks the winner: uniqueOpens (human opens per sent), uniqueClicks (clickers "
        "per sent) or clicksPerDelivered (clickers per delivered); machine opens never count",
    )
    decide_after: str = Field(
        "4h",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="how long after the test cohort finished sending the winner is chosen; "
        "a duration like 15m, 4h or 1h30m",
        json_schema_extra=_duration_rule("abTest.decideAfter"),
    )
    min_sample: int = Field(
        100,
        ge=1,
        le=10_000_000,
        description="messages every variant needs in the metric's denominator (sent or delivered)",
    )
    fallback: AbFallback = Field(
        AbFallback.PAUSE,
        description="when decideAfter passed and the data names no winner (too little data or a tie): "
        "firstVariant sends the first variant, pause waits for a person to set winner",
    )
    winner: str | None = Field(
        None,
        max_length=32,
        description="set by a person: the variant the rest of the list receives (decides at once)",
    )


class RolloutStepSpec(Wire):
    """One rollout step."""

    percent: float = Field(gt=0, le=100, description="share of the list released once this step begins")
    hold: str = Field(
        "0s",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="after the step's messages are handled, wait this long (in the send window) before "
        "judging it; a duration like 15m, 4h or 1h30m",
        json_schema_extra=_duration_rule("rollout.steps[].hold"),
    )


STEPS_INCREASING = "rollout.steps: percent must be strictly increasing"
LAST_STEP_100 = "rollout.steps: the last step must be percent 100"


class RolloutSpec(Wire):
    """Progressive rollout: release the list in steps, each judged on its own bounce and complaint rates."""

    steps: list[RolloutStepSpec] = Field(
        min_length=1,
        max_length=MAX_ROLLOUT_STEPS,
        description="steps with strictly increasing percent, the last one 100",
        json_schema_extra=cel(
            (
                "self.map(x, x.percent).isSorted() && "
                "self.all(a, self.exists_one(b, b.percent == a.percent))",
                STEPS_INCREASING,
            ),
            ("self[size(self) - 1].percent == 100.0", LAST_STEP_100),
        ),
    )
    # No defaults: the plan's breaker thresholds (spec.safety, then the operator's settings) apply.
    max_bounce_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="a step's bounce rate that pauses the rollout (default: safety.maxBounceRate)",
    )
    max_complaint_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="a step's complaint rate that pauses the rollout (default: the safety one)",
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[RolloutStepSpec]) -> list[RolloutStepSpec]:
        percents = [s.percent for s in steps]
        if any(b <= a for a, b in itertools.pairwise(percents)):
            raise ValueError(STEPS_INCREASING)
        if percents and percents[-1] != 100:
            raise ValueError(LAST_STEP_100)
        return steps


class WindowSpec(Ruled):
    """Send only inside this weekly window (one time zone for the whole plan)."""

    days: list[Weekday] | None = Field(
        None,
        min_length=1,
        max_length=7,
        description="days the window opens (a window crossing midnight belongs to the day it opens); "
        "default every day",
        json_schema_extra=SET_LIST,
    )
    start: str = Field(
        alias="from",
        max_length=5,
        pattern=CLOCK_PATTERN,
        description="opening time of day, HH:MM",
        json_schema_extra=_clock_rule("schedule.window.from"),
    )
    end: str = Field(
        alias="to",
        max_length=5,
        pattern=CLOCK_PATTERN,
        description="closing time of day, HH:MM; earlier than from: the window crosses midnight",
        json_schema_extra=_clock_rule("schedule.window.to"),
    )
    time_zone: str = Field(
        DEFAULT_TIME_ZONE,
        min_length=1,
        max_length=64,
        description="IANA time zone, e.g. Europe/Berlin (DST handled); or recipient: each recipient "
        "inside the window of their own timeZone (list column, field or var), fallbackTimeZone for "
        "those without one",
    )
    fallback_time_zone: str = Field(
        DEFAULT_TIME_ZONE,
        min_length=1,
        max_length=64,
        description="with timeZone recipient: the IANA zone of recipients that have none",
    )

    RULES = (
        Rule("self.from != self.to", "schedule.window: from and to must differ", lambda w: w.start != w.end),
    )

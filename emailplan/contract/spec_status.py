"""The EmailPlan status: what the operator writes, as one typed definition.

The CRD's status schema and ``docs/spec.md`` are generated from these models
(``hack/gen_crd.py``). The counts are ``contract.counts.StatusCounts``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from emailplan.contract.counts import StatusCounts
from emailplan.contract.kubemarks import INT64, NULLABLE
from emailplan.contract.plans import TOP_FAILURE_REASONS, FailureReason
from emailplan.contract.wire import Wire


class Phase(StrEnum):
    """Lifecycle phase."""

    PENDING = "Pending"
    LOADING = "Loading"
    SCHEDULED = "Scheduled"  # before schedule.startAt, or outside the send window
    SENDING = "Sending"
    HOLDING = "Holding"  # a rollout step's hold, or the wait before the A/B winner is chosen
    SUSPENDED = "Suspended"
    COMPLETED = "Completed"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    """True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def _nonneg_int(description: str | None = None, *, int64: bool = False) -> Any:
    extra = {"minimum": 0, **(INT64 if int64 else {})}
    return Field(None, description=description, json_schema_extra=extra)


def _time(description: str, *, nullable: bool = False) -> Any:
    return Field(None, description=description, json_schema_extra=NULLABLE if nullable else None)


class Condition(Wire):
    """Standard Kubernetes condition."""

    type: str = Field(max_length=316, description="condition type")
    status: ConditionStatus = Field(description="True, False or Unknown")
    reason: str | None = Field(None, max_length=1024, description="machine-readable reason (CamelCase)")
    message: str | None = Field(None, max_length=32768, description="human-readable message")
    last_transition_time: datetime | None = _time("when status last changed")
    observed_generation: int | None = _nonneg_int(int64=True)


class VariantStatus(Wire):
    """One variant's counts over the test cohort; rates are fractions (0.12 = 12 %)."""

    name: str | None = Field(None, description="variant")
    recipients: int | None = _nonneg_int(int64=True)
    sent: int | None = _nonneg_int(int64=True)
    delivered: int | None = _nonneg_int(int64=True)
    opened: int | None = _nonneg_int(int64=True)
    clicked: int | None = _nonneg_int(int64=True)
    bounced: int | None = _nonneg_int(int64=True)
    complained: int | None = _nonneg_int(int64=True)
    open_rate: float | None = Field(None, json_schema_extra={"minimum": 0})
    click_rate: float | None = Field(None, json_schema_extra={"minimum": 0})
    clicks_per_delivered: float | None = Field(None, json_schema_extra={"minimum": 0})


class AbTestStatus(Wire):
    """The A/B test: per-variant counts over the test cohort, the winner and why."""

    test_percent: float | None = None
    metric: str | None = Field(None, description="metric the winner is chosen by")
    cohort_finished_at: datetime | None = _time("when the test cohort had no message left", nullable=True)
    decide_at: datetime | None = _time("when the winner is chosen from the data", nullable=True)
    winner: str | None = Field(
        None, description="the variant the rest of the list receives", json_schema_extra=NULLABLE
    )
    reason: str | None = Field(None, max_length=4096, description="why this winner (or why none yet)")
    decided_at: datetime | None = _time("when the winner was chosen", nullable=True)
    variants: list[VariantStatus] | None = None


class RolloutStatus(Wire):
    """The progressive rollout: current step, its hold and its own rates."""

    step: int | None = Field(None, description="current step (1-based)", json_schema_extra={"minimum": 1})
    steps: int | None = Field(None, json_schema_extra={"minimum": 1})
    percent: float | None = Field(None, description="share of the list released by this step")
    state: str | None = Field(
        None, description="Sending, Holding, GateFailed or Completed (the plan finished)"
    )
    step_started_at: datetime | None = _time("when this step began")
    hold_started_at: datetime | None = _time("when the step's messages were all handled", nullable=True)
    held_seconds: int | None = _nonneg_int("hold time so far (inside the window)")
    hold_seconds: int | None = _nonneg_int("the step's hold")
    baseline: dict[str, int] | None = Field(
        None,
        description="plan counts when the step began; the step's rates count from here",
        json_schema_extra={"additionalProperties": {"type": "integer", "format": "int64"}},
    )
    step_sample: int | None = _nonneg_int("delivered + bounced in this step")
    step_bounce_rate: float | None = Field(None, json_schema_extra={"minimum": 0})
    step_complaint_rate: float | None = Field(None, json_schema_extra={"minimum": 0})


class WindowStatus(Wire):
    """The send window now."""

    open: bool | None = None
    next_change: datetime | None = _time("when it next opens or closes", nullable=True)
    schedule: str | None = Field(None, description="the window, e.g. Mon,Tue 09:00-17:00 Europe/Berlin")
    waiting: int | None = _nonneg_int(
        "timeZone recipient: recipients still to send whose own window is closed now"
    )
    open_zones: int | None = _nonneg_int("timeZone recipient: recipients' zones whose window is open now")


class AudienceStatus(Wire):
    """A follow-up's audience (``recipients.fromPlan``): when it is taken and how many it matched."""

    plan: str | None = Field(None, description="the source plan")
    outcome: str | None = Field(None, description="the outcome selected (notOpened, ...)")
    takes_at: datetime | None = _time(
        "when the audience is taken: the source plan's completion plus fromPlan.after", nullable=True
    )
    matched: int | None = _nonneg_int(
        "source recipients with the outcome when the audience was taken", int64=True
    )
    suppressed: int | None = _nonneg_int("of them, suppressed or unsubscribed since (not mailed)", int64=True)
    taken_at: datetime | None = _time("when the audience was taken", nullable=True)


class RetryStatus(Wire):
    """Retries of the plan (``spec.retry``): the generation asked for and the last one done."""

    requested: int | None = _nonneg_int("spec.retry.generation")
    generation: int | None = _nonneg_int("the last retry generation the data plane ran")


class EmailPlanStatus(StatusCounts):
    """Live progress, written by the operator."""

    phase: Phase | None = Field(None, description="lifecycle phase")
    progress: str | None = Field(
        None, pattern=r"^[0-9]{1,3}%$", description="share of messages finished, e.g. '42%'"
    )
    replicas: int | None = _nonneg_int("sender pods wanted now")
    started_at: datetime | None = _time("first send")
    completed_at: datetime | None = _time("when nothing was left")
    observed_generation: int | None = _nonneg_int(int64=True)
    recipients_loaded: bool | None = Field(None, description="recipients handed to the data plane")
    message: str | None = Field(None, max_length=4096, description="latest human-readable summary")
    failures: list[FailureReason] | None = Field(
        None,
        max_length=TOP_FAILURE_REASONS,
        description=f"why messages were not sent: the {TOP_FAILURE_REASONS} most frequent reasons of failed "
        "and suppressed messages with their counts, most frequent first; `emailplan failures` lists the "
        "addresses",
    )
    conditions: list[Condition] | None = Field(
        None, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    )
    ab_test: AbTestStatus | None = None
    rollout: RolloutStatus | None = None
    window: WindowStatus | None = None
    audience: AudienceStatus | None = None
    retry: RetryStatus | None = None
    kopf: dict[str, Any] | None = Field(
        None,
        description="operator framework bookkeeping",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

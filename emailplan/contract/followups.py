"""Follow-ups and retries: who a follow-up plan mails, and the bodies that ask the data plane.

A follow-up plan (``spec.recipients.fromPlan``) mails the recipients of another plan
that ended one way (did not open, did not click, soft-bounced...). The audience is
computed by the ledger from the source plan's messages at the moment the follow-up
starts, so the operator never copies addresses; it only names the source plan and
the outcome. A retry (``spec.retry.generation``) re-queues a finished plan's
transient failures and soft bounces once per generation.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import Field

from emailplan.contract.wire import Wire

# The reason class of a message that failed only because transient errors did not stop
# (``sender.sespolicy``); every other failure is a refusal that a retry cannot change.
TRANSIENT_FAILURE_PREFIX = "gave up after "


class FollowUpOutcome(StrEnum):
    """What happened to a source plan's message, as the follow-up selects it."""

    NOT_OPENED = "notOpened"  # sent, not bounced, no human open and no click
    NOT_CLICKED = "notClicked"  # sent, not bounced, no click
    DELIVERED = "delivered"  # SES reported a delivery
    SOFT_BOUNCED = "softBounced"  # a transient bounce and no hard bounce
    FAILED = "failed"  # the source plan gave up on it (refused or out of retries)


class FromPlanSource(Wire):
    """``POST /v1/plans/{planId}/recipients/from-plan``: load the follow-up's audience from the ledger.

    ``planId`` is the source plan's id (its EmailPlan's uid). The source must be finished;
    loading is idempotent by the follow-up's id: once its list is complete, asking again
    answers the same job and adds no one.
    """

    plan_id: uuid.UUID = Field(description="the source plan (EmailPlan metadata.uid)")
    outcome: FollowUpOutcome = Field(description="which of the source plan's recipients to mail")


class RetryRequest(Wire):
    """``POST /v1/plans/{planId}/retry``: re-queue transient failures and soft bounces once.

    A generation at or below the plan's last retry changes nothing, so asking again is safe.
    """

    generation: int = Field(ge=1, le=1_000_000, description="the retry's generation (spec.retry.generation)")


class RetryResult(Wire):
    """What a retry did: the generation in force and how many messages it re-queued now."""

    generation: int = Field(ge=0)
    requeued: int = Field(0, ge=0, description="messages re-queued by this call (0 when already done)")

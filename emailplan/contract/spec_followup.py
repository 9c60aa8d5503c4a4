"""The follow-up parts of an EmailPlan spec: ``recipients.fromPlan`` and ``retry``.

Part of the one definition of the resource (``contract.spec``): the CRD, its
defaults and the operator's reading all come from these models.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from emailplan.contract.followups import FollowUpOutcome
from emailplan.contract.kubemarks import matches
from emailplan.contract.spec_campaign import DURATION_PATTERN, parse_duration
from emailplan.contract.wire import Wire

PLAN_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"  # a Kubernetes object name (RFC 1123 subdomain)


class FromPlanSpec(Wire):
    """Mail the recipients of another plan of this namespace by what happened to their message.

    The audience is computed in the ledger when the follow-up starts: after the source
    plan completed and ``after`` has passed. Suppressions and unsubscribes made since are
    applied again; re-applying the follow-up never mails anyone twice.
    """

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=PLAN_NAME_PATTERN,
        description="the source EmailPlan, in the same namespace",
        json_schema_extra=matches(PLAN_NAME_PATTERN, "recipients.fromPlan.name must be an EmailPlan name"),
    )
    outcome: FollowUpOutcome = Field(
        description="whom to mail: notOpened (sent, no human open or click, not bounced), notClicked "
        "(sent, no click, not bounced), delivered, softBounced (transient bounce, no hard bounce) "
        "or failed (the source gave up on the message)"
    )
    after: str = Field(
        "0s",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="how long after the source plan completed the audience is taken; "
        "a duration like 48h or 1h30m",
        json_schema_extra=matches(
            DURATION_PATTERN, "recipients.fromPlan.after must be a duration like 48h or 1h30m (units h, m, s)"
        ),
    )

    @property
    def delay(self) -> timedelta:
        return parse_duration(self.after) or timedelta(0)


class RetrySpec(Wire):
    """Send again what failed for a passing reason, once per generation.

    Raise ``generation`` (kubectl patch) on a finished plan: its messages that failed
    after running out of transient retries and those that soft-bounced are queued once
    more (counted in ``retried``); hard bounces, complaints and suppressed addresses never.
    """

    generation: int = Field(
        ge=1,
        le=1_000_000,
        description="raise it to retry once more; a generation already done changes nothing",
    )

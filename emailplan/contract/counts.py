"""The counts of a plan: the one list of their names, order and meaning.

The EmailPlan status (and so the CRD), the data plane's ``PlanCounts``, the CLI
and the demo all read this model; ``STATUS_COUNTS`` is derived from it, so a new
count is one field here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from emailplan.contract.wire import Wire


def _count(description: str) -> Any:
    # ``minimum`` only in the CRD: a reader must not fail on a counter caught mid-update.
    return Field(0, description=description, json_schema_extra={"format": "int64", "minimum": 0})


class StatusCounts(Wire):
    """Counts of one plan as status and statistics show them, in the order of DESIGN.md."""

    total: int = _count(
        "messages in the plan: the list's accepted rows after de-duplication (rejected rows and "
        "duplicates are not counted), suppressed ones included; once the plan is finished, "
        "total = sent + failed + stopped + suppressed"
    )
    created: int = _count("messages waiting to be sent")
    sent: int = _count("messages SES accepted")
    failed: int = _count("messages SES refused permanently or that ran out of retries")
    stopped: int = _count("messages that will not be sent because the plan was stopped or deleted")
    suppressed: int = _count("recipients skipped because the address is on the suppression list")
    retried: int = _count(
        "messages queued once more by a retry (spec.retry): transient failures and soft bounces; each "
        "leaves sent or failed when queued and is counted again where its new attempt ends"
    )
    delivered: int = _count("SES delivery events")
    bounced: int = _count(
        "hard bounces (SES bounce type Permanent); they suppress the address and feed the breaker"
    )
    soft_bounced: int = _count(
        "soft bounces (SES bounce type Transient or Undetermined); the address is not suppressed"
    )
    complained: int = _count("SES complaint events")
    opened: int = _count("unique opens by people (machine opens are counted apart)")
    clicked: int = _count("unique clicks")
    unsubscribed: int = _count("one-click and link unsubscribes")


STATUS_COUNTS: tuple[str, ...] = tuple(str(f.alias or name) for name, f in StatusCounts.model_fields.items())
"""The wire names of the counts (``softBounced``), in order."""

"""Pure rules the pass decision (``decide``) is made of: replicas, progress, breaker, conditions, status diff.

Nothing here does I/O or reads a clock: every input (counts, spec values, ``now``)
is an argument, so the rules are table-tested without servers and the handlers
only gather inputs and apply the answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emailplan.contract import STATUS_COUNTS
from emailplan.contract.plans import BACKLOG_PER_REPLICA

# Counts shown in status, in the order of DESIGN.md.
COUNT_FIELDS = STATUS_COUNTS


def normalize_counts(raw: dict[str, Any]) -> dict[str, int]:
    """Keep the status count fields (missing ones are 0) plus ``processing`` for the backlog.

    The data plane may answer more fields or, while a plan is new, fewer; status
    always shows the same set so printer columns never go blank.
    """
    out = {key: _int(raw.get(key)) for key in COUNT_FIELDS}
    out["processing"] = _int(raw.get("processing"))
    return out


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def remaining(counts: dict[str, int]) -> int:
    """Messages still to send: waiting (``created``) plus claimed by a pod (``processing``)."""
    return counts.get("created", 0) + counts.get("processing", 0)


def progress(counts: dict[str, int], *, completed: bool = False) -> str:
    """Share of the list that is finished (sent, failed, stopped or suppressed), as ``"42%"``.

    Rounded down so ``100%`` is shown only when nothing is left.
    """
    total = counts.get("total", 0)
    if total <= 0:
        return "100%" if completed else "0%"
    done = max(0, total - remaining(counts))
    return f"{min(100, math.floor(done * 100 / total))}%"


def desired_replicas(
    *,
    now: datetime,
    start_at: datetime | None,
    suspended: bool,
    loaded: bool,
    backlog: int,
    rate_per_second: float,
    per_pod_rate: float,
    max_replicas: int,
    backlog_per_replica: int = BACKLOG_PER_REPLICA,
    current: int = 0,
) -> int:
    """How many sender pods the plan needs right now.

    None before ``startAt``, while suspended (by the user or the breaker), before the
    list is loaded, and when nothing is left. Otherwise enough pods for the rate
    (each pod sends ``per_pod_rate``), but no more than ``max_replicas`` and no more
    than there are work batches (a pod with nothing to claim only costs money).
    The backlog cap limits starting pods, never stops ``current`` ones mid-plan: a pod
    stopped while it holds claimed work releases it, which is churn for nothing when
    the plan is about to finish anyway.
    """
    if suspended or not loaded or backlog <= 0:
        return 0
    if start_at is not None and now < start_at:
        return 0
    for_rate = math.ceil(rate_per_second / per_pod_rate) if per_pod_rate > 0 else 1
    for_backlog = math.ceil(backlog / max(1, backlog_per_replica))
    wanted = min(max(1, for_rate), max_replicas)
    return max(0, min(wanted, max(for_backlog, current)))


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event the pass wants posted on the plan."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Trip:
    """Why the reputation circuit breaker suspended a plan."""

    reason: str
    message: str


def reputation_rates(counts: dict[str, int]) -> tuple[int, float, float]:
    """(sample, bounce rate, complaint rate): per message that reached a mailbox decision.

    The one definition of the rates: the plan's circuit breaker and the rollout gate
    (``campaign``) both judge them, and status shows them.
    """
    sample = counts.get("delivered", 0) + counts.get("bounced", 0)
    if sample <= 0:
        return 0, 0.0, 0.0
    return sample, counts.get("bounced", 0) / sample, counts.get("complained", 0) / sample


def circuit_breaker(
    counts: dict[str, int],
    *,
    max_bounce_rate: float,
    max_complaint_rate: float,
    min_sample: int,  # the plan's, or the operator's setting (planspec): no default here
    fields: str = "spec.safety",
) -> Trip | None:
    """Trip when bounces or complaints exceed the plan's thresholds after a minimum sample.

    Rates are per message that reached a mailbox decision (delivered + bounced), the
    denominator SES itself uses for reputation. Below ``min_sample`` a few early
    bounces would pause a healthy campaign, so the breaker stays closed. Every pass judges
    again, so raising the threshold continues: the message names the field (under
    ``fields``) and the rate it must exceed, because the person reading it must act.
    """
    sample, bounce_rate, complaint_rate = reputation_rates(counts)
    if sample < min_sample or sample <= 0:
        return None
    if bounce_rate > max_bounce_rate:
        return Trip(
            "BounceRateExceeded",
            f"bounce rate {bounce_rate:.2%} over the limit {max_bounce_rate:.2%} "
            f"({counts.get('bounced', 0)} of {sample}); sending suspended: "
            f"raise {fields}.maxBounceRate above {bounce_rate:.2%} to continue",
        )
    if complaint_rate > max_complaint_rate:
        return Trip(
            "ComplaintRateExceeded",
            f"complaint rate {complaint_rate:.2%} over the limit {max_complaint_rate:.2%} "
            f"({counts.get('complained', 0)} of {sample}); sending suspended: "
            f"raise {fields}.maxComplaintRate above {complaint_rate:.2%} to continue",
        )
    return None


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 (``2026-01-01T10:00:00Z``) to an aware datetime; None when absent or invalid."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> dict[str, Any]:
    """A condition in the standard Kubernetes shape.

    ``lastTransitionTime`` moves only when ``status`` flips, as kubectl and other
    controllers expect, so re-evaluating an unchanged condition changes nothing.
    """
    status_text = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status_text else None
    out: dict[str, Any] = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or format_time(now),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def merge_conditions(previous: list[dict[str, Any]], updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace conditions by type, keep the others, order by type for a stable diff."""
    by_type = {c.get("type"): c for c in previous if isinstance(c, dict)}
    for c in updates:
        by_type[c["type"]] = c
    return [by_type[k] for k in sorted(by_type, key=str)]


def status_changes(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The top-level status fields whose value differs: empty means no patch is sent.

    Writing an unchanged status would wake every watcher (kubectl -w, our own
    watch) for nothing, so the operator patches only differences.
    """
    return {key: value for key, value in desired.items() if current.get(key) != value}

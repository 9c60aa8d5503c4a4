"""Pure rules for outages of the data plane: when to say so, what to say, and when it is over.

An outage is "the API does not answer" (only the operator can see that), "the API
says the database is down" (its typed 503), or "the API says SQS or SES is down"
(its plan view). It is shown as the condition ``DataPlaneAvailable=False`` (and
``Ready=False`` with the same reason), in the status message with since when, and
with one Warning Event; when it ends, the condition is True again and a Normal
Event says how long it lasted. A blip shorter than :data:`GRACE` shows nothing.
The start of the outage is the condition's ``lastTransitionTime``, so it survives
an operator restart. No I/O, no clock (``now`` is an argument), no kopf.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from emailplan.contract.health import Dependency
from emailplan.contract.httpapi import STOP_PLAN
from emailplan.contract.plans import PlanView
from emailplan.operator.rules import Event, format_time, parse_time

GRACE = timedelta(seconds=5)  # shorter than this is a blip (a restart, a failover): not shown
CONDITION = "DataPlaneAvailable"
RECOVERED = "DataPlaneRecovered"


@dataclass(frozen=True)
class Outage:
    """Something the plan needs is down: what, what the client saw, since when (first seen)."""

    dependency: Dependency
    detail: str
    since: datetime


def from_view(view: PlanView | None) -> Outage | None:
    """The first dependency the API reports down in its plan view (database first)."""
    if view is None:
        return None
    for health in view.dependencies:
        if not health.available and health.since is not None:
            return Outage(health.dependency, health.message, health.since)
    return None


@dataclass
class Verdict:
    """What the pass shows about outages: the condition, and (while one is shown) its words."""

    condition: dict[str, Any]
    shown: Outage | None = None  # an outage past the grace (None: all clear, or still a blip)
    blip: bool = False  # an outage within the grace: change nothing yet
    message: str = ""
    events: list[Event] = field(default_factory=list)
    recheck_after: float | None = None  # seconds until the grace ends


def _previous(status: Mapping[str, Any]) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == CONDITION:
            return c
    return {}


def judge(outage: Outage | None, status: Mapping[str, Any], now: datetime, generation: int) -> Verdict:
    """Whether to show an outage now, and the ``DataPlaneAvailable`` condition either way."""
    before = _previous(status)
    was_down = before.get("status") == "False"
    began = parse_time(before.get("lastTransitionTime")) if was_down else None
    if outage is None:
        verdict = Verdict(_condition("True", "Available", "", now, generation, before))
        if was_down and began is not None:
            lasted = int((now - began).total_seconds())
            what = str(before.get("message") or "the data plane").split(" unavailable")[0]
            verdict.events.append(Event("Normal", RECOVERED, f"recovered after {lasted}s ({what} is back)"))
        return verdict
    since = min(outage.since, began) if began is not None else outage.since
    if not was_down and now - since < GRACE:
        return Verdict(dict(before), blip=True, recheck_after=(since + GRACE - now).total_seconds())
    reason = outage.dependency.reason
    seconds = int((now - since).total_seconds())
    detail = f": {outage.detail}" if outage.detail else ""
    message = (
        f"{outage.dependency.words} unavailable since {format_time(since)} ({seconds}s){detail}; "
        "sending resumes by itself when it is back, nothing is lost"
    )
    verdict = Verdict(_condition("False", reason, message, since, generation, before), shown=outage)
    verdict.message = message
    if not was_down or before.get("reason") != reason:
        verdict.events.append(Event("Warning", reason, message[:1000]))
    return verdict


def _condition(
    status: str,
    reason: str,
    message: str,
    since: datetime,
    generation: int,
    before: Mapping[str, Any],
) -> dict[str, Any]:
    """The condition; when False, ``lastTransitionTime`` is the outage's start, not the pass that saw it."""
    kept = before.get("lastTransitionTime") if status == "True" and before.get("status") == "True" else None
    return {
        "type": CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": kept or format_time(since),
        "observedGeneration": generation,
    }


# --- deletion while the data plane is down ---------------------------------------------------------------

DELETE_BACKOFF_SECONDS = 5.0
DELETE_MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class DeletionStep:
    """What a deleted plan does when the data plane could not stop it: wait again, or let go."""

    release: bool  # give up: release the finalizer now
    delay: float = 0.0  # else try again after this many seconds
    event: Event | None = None


def deletion_step(
    *, waited: timedelta, attempt: int, bound_seconds: float, status: Mapping[str, Any], what: str
) -> DeletionStep:
    """Retry with backoff and say so; after ``bound_seconds`` release, naming what the ledger keeps.

    The ledger cannot be asked (that is the problem), so the leftovers are the plan's
    last known status counts.
    """
    left = bound_seconds - waited.total_seconds()
    if left <= 0:
        total, sent, waiting = (int(status.get(k) or 0) for k in ("total", "sent", "created"))
        message = (
            f"{what} stayed unavailable for {int(waited.total_seconds())}s, so the finalizer was released "
            f"without stopping the plan in the data plane. Last known counts: {sent} of {total} sent, "
            f"{waiting} not sent and left in the ledger (no sender pod runs for them). When the data plane "
            f"is back, stop it there ({STOP_PLAN.method} {STOP_PLAN.path}) or leave it: nothing more is sent."
        )
        return DeletionStep(release=True, event=Event("Warning", "FinalizerReleased", message[:1000]))
    delay = min(DELETE_MAX_BACKOFF_SECONDS, DELETE_BACKOFF_SECONDS * 2 ** min(attempt, 6), left)
    event = None
    if attempt == 0 or attempt % 10 == 0:
        event = Event(
            "Warning",
            "DeletionWaiting",
            f"cannot stop the plan: {what} unavailable; retrying with backoff, the finalizer is released "
            f"anyway in {int(left)}s (operator setting deletionTimeoutSeconds)",
        )
    return DeletionStep(release=False, delay=max(1.0, delay), event=event)

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
from emailplan.contract.plans import PlanView
from emailplan.operator.decisions import Event, format_time, parse_time

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

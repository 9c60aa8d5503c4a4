"""Pure rules of the campaign features: send windows, the A/B winner, progressive rollout steps.

The same contract as ``decide``: no I/O, no clock, no kopf (import-linter keeps it so).
Everything a rule needs, ``now`` included, is an argument, and everything a rule must
remember between passes lives in the plan's status (``status.abTest``, ``status.rollout``),
which the next pass reads back. So an operator restart continues where the last one
stopped, and a threshold raised by a person is seen on the next pass without any
hidden state. ``steer`` combines the three for ``decide``; the data plane only ever
hears the result through the plan PUT (release share, winner, suspension).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from emailplan.contract.plans import ALL_RELEASED, PlanCounts, PlanView, VariantCounts
from emailplan.operator.planspec import AbFallback, AbMetric, AbTest, PlanSpec, Rollout, SendWindow
from emailplan.operator.rules import (
    Event,
    Trip,
    circuit_breaker,
    format_time,
    parse_time,
    reputation_rates,
)

WINDOW_LOOKAHEAD = timedelta(days=8)  # every weekday occurs in it, DST shifts included
BASELINE_FIELDS = ("sent", "delivered", "bounced", "complained")

# --- send windows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowState:
    open: bool
    next_change: datetime | None  # when it closes (open) or opens (closed); None: never opens


def openings(window: SendWindow, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The window's open intervals in UTC that overlap ``[start, end)``, merged, in order.

    Each allowed day opens at ``start`` local time and closes at ``end`` the same day
    or, when ``end`` is not after ``start``, the next day. Local times are turned into
    instants with zoneinfo: a time skipped by a DST change counts with the offset before
    the change (02:30 on a spring-forward night is 03:30), a repeated time is its first
    occurrence, so the window always has the wall-clock length users expect.
    """
    zone = ZoneInfo(window.time_zone)
    day = start.astimezone(zone).date() - timedelta(days=1)  # a window that opened yesterday
    last = end.astimezone(zone).date()
    found: list[tuple[datetime, datetime]] = []
    while day <= last:
        if day.weekday() in window.days:
            opens = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
            close_day = day if window.end > window.start else day + timedelta(days=1)
            closes = datetime.combine(close_day, window.end, tzinfo=zone).astimezone(UTC)
            if opens < closes and closes > start and opens < end:
                found.append((opens, closes))
        day += timedelta(days=1)
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in sorted(found):
        if merged and opens <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


def zoned(window: SendWindow, instant: datetime) -> str:
    """An instant as people planning the window read it: in the plan's zone, and in UTC.

    ``2026-12-07 09:00 Europe/Berlin (2026-12-07T08:00:00Z)``: the local time is what the
    owner wrote in ``schedule.window``, UTC what logs and ``status.window.nextChange`` use.
    """
    utc = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if window.time_zone in ("UTC", "Etc/UTC"):
        return utc
    local = instant.astimezone(ZoneInfo(window.time_zone)).strftime("%Y-%m-%d %H:%M")
    return f"{local} {window.time_zone} ({utc})"


def window_state(window: SendWindow, now: datetime) -> WindowState:
    """Whether sending is allowed at ``now``, and when that next changes."""
    for opens, closes in openings(window, now, now + WINDOW_LOOKAHEAD):
        if opens <= now < closes:
            return WindowState(True, closes)
        if opens > now:
            return WindowState(False, opens)
    return WindowState(False, None)


FALLBACK_ZONE = ""  # how the data plane names the zone of rows that carry none (the window's fallback)


@dataclass(frozen=True)
class LocalWindows:
    """A per-recipient window at one instant: the zones open now, and when the next one opens or closes."""

    open_zones: tuple[str, ...]  # as the data plane names them (``FALLBACK_ZONE`` included), sorted
    next_change: datetime | None  # None: no zone known, or none ever opens


def local_windows(window: SendWindow, zones: Sequence[str], now: datetime) -> LocalWindows:
    """Which of ``zones`` (the recipients' zones) have ``window`` open at ``now``, read in each zone.

    A zone that is not a zone the tz database knows cannot reach here (the list's reader
    refuses the row); ``FALLBACK_ZONE`` reads the window in ``window.time_zone``.
    """
    opened: list[str] = []
    change: datetime | None = None
    for zone in sorted(set(zones)):
        state = window_state(window.in_zone(zone or window.time_zone), now)
        if state.open:
            opened.append(zone)
        if state.next_change is not None and (change is None or state.next_change < change):
            change = state.next_change
    return LocalWindows(tuple(opened), change)


def open_seconds(window: SendWindow | None, start: datetime, end: datetime) -> float:
    """Seconds of ``[start, end)`` inside the window (all of them without a window)."""
    if end <= start:
        return 0.0
    if window is None:
        return (end - start).total_seconds()
    return sum(
        (min(closes, end) - max(opens, start)).total_seconds()
        for opens, closes in openings(window, start, end)
    )


# --- A/B winner ----------------------------------------------------------------------------------------


class Verdict(StrEnum):
    CHOSEN = "chosen"
    WAIT = "wait"
    NEED_PERSON = "needPerson"


@dataclass(frozen=True)
class WinnerChoice:
    verdict: Verdict
    winner: str | None = None
    reason: str = ""
    decide_at: datetime | None = None  # WAIT: when the data will be judged


def metric_fraction(counts: VariantCounts, metric: AbMetric) -> tuple[int, int]:
    """(numerator, denominator) of the metric; opens are human opens (the data plane counts them so)."""
    if metric is AbMetric.UNIQUE_OPENS:
        return counts.opened, counts.sent
    if metric is AbMetric.UNIQUE_CLICKS:
        return counts.clicked, counts.sent
    return counts.clicked, counts.delivered


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _fallback(ab: AbTest, names: Sequence[str], why: str) -> WinnerChoice:
    if ab.fallback is AbFallback.FIRST_VARIANT:
        return WinnerChoice(Verdict.CHOSEN, names[0], f"{why}; fallback firstVariant: {names[0]}")
    return WinnerChoice(Verdict.NEED_PERSON, None, f"{why}; set spec.abTest.winner to continue")


def choose_winner(
    variant_counts: Sequence[VariantCounts],
    ab: AbTest,
    names: Sequence[str],
    cohort_finished_at: datetime | None,
    now: datetime,
) -> WinnerChoice:
    """The winner, a time to wait for, or the need for a person to decide.

    A person's ``spec.abTest.winner`` decides at once. Otherwise the data is judged
    ``decideAfter`` after the test cohort finished sending (opens and clicks come in
    for hours). Every variant needs ``minSample`` messages in the metric's denominator;
    below that, or on a tie for the best rate, the data names no winner and the
    ``fallback`` applies. Rates are compared as exact fractions, so a tie is a tie.
    """
    if ab.winner:
        return WinnerChoice(Verdict.CHOSEN, ab.winner, "set by spec.abTest.winner")
    if cohort_finished_at is None:
        return WinnerChoice(
            Verdict.WAIT, reason=f"the test cohort ({ab.test_percent:g}% of the list) is sending"
        )
    decide_at = cohort_finished_at + ab.decide_after
    if now < decide_at:
        return WinnerChoice(
            Verdict.WAIT,
            reason=f"choosing the winner by {ab.metric.value} at {format_time(decide_at)}",
            decide_at=decide_at,
        )
    by_name = {c.name: c for c in variant_counts}
    counts = [by_name.get(n) or VariantCounts(name=n) for n in names]
    fractions = [metric_fraction(c, ab.metric) for c in counts]
    short = [c.name for c, (_, den) in zip(counts, fractions, strict=True) if den < ab.min_sample]
    if short:
        what = "delivered" if ab.metric is AbMetric.CLICKS_PER_DELIVERED else "sent"
        return _fallback(
            ab, names, f"too little data: {', '.join(short)} below minSample {ab.min_sample} {what}"
        )
    rates = [Fraction(num, den) for num, den in fractions]
    best = max(rates)
    leaders = [c.name for c, r in zip(counts, rates, strict=True) if r == best]
    shown = ", ".join(f"{c.name} {float(r):.2%}" for c, r in zip(counts, rates, strict=True))
    if len(leaders) > 1:
        return _fallback(ab, names, f"{ab.metric.value} tied between {', '.join(leaders)} ({shown})")
    return WinnerChoice(Verdict.CHOSEN, leaders[0], f"best {ab.metric.value}: {shown}")


def variant_rows(variant_counts: Sequence[VariantCounts], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-variant counts and rates for ``status.abTest.variants``, in the spec's order."""
    by_name = {c.name: c for c in variant_counts}
    rows = []
    for name in names:
        c = by_name.get(name) or VariantCounts(name=name)
        rows.append(
            {
                **c.model_dump(by_alias=True),
                "openRate": round(_rate(c.opened, c.sent), 6),
                "clickRate": round(_rate(c.clicked, c.sent), 6),
                "clicksPerDelivered": round(_rate(c.clicked, c.delivered), 6),
            }
        )
    return rows


# --- progressive rollout -------------------------------------------------------------------------------


class RolloutPhase(StrEnum):
    SENDING = "Sending"  # the step's share is going out (the last step: the rest of the list)
    HOLDING = "Holding"  # the step's share is handled; its results are watched for the hold time
    GATE_FAILED = "GateFailed"  # the hold is over and the step's rates are over a threshold
    COMPLETED = "Completed"  # the plan is finished: no step is sending any more


@dataclass(frozen=True)
class RolloutProgress:
    """What ``status.rollout`` remembers: the current step (by its percent) and its baseline."""

    percent: float
    started_at: datetime
    baseline: Mapping[str, int]
    hold_started_at: datetime | None = None

    @classmethod
    def from_status(cls, raw: Any) -> RolloutProgress | None:
        if not isinstance(raw, Mapping) or raw.get("percent") is None:
            return None
        started = parse_time(raw.get("stepStartedAt"))
        if started is None:
            return None
        base = raw.get("baseline")
        if not isinstance(base, Mapping):
            base = {}
        return cls(
            percent=float(raw["percent"]),
            started_at=started,
            baseline={k: int(base.get(k) or 0) for k in BASELINE_FIELDS},
            hold_started_at=parse_time(raw.get("holdStartedAt")),
        )


@dataclass(frozen=True)
class RolloutDecision:
    release_percent: float
    phase: RolloutPhase
    progress: RolloutProgress  # the next status.rollout
    step: int  # 0-based index of the current step
    step_started: bool = False  # a step began on this pass (an Event says so)
    held_seconds: float = 0.0
    wake_at: datetime | None = None  # the hold ends then (if the window stays open)
    gate: Trip | None = None
    step_counts: Mapping[str, int] = field(default_factory=dict)


def _baseline(counts: Mapping[str, int]) -> dict[str, int]:
    return {k: int(counts.get(k, 0)) for k in BASELINE_FIELDS}


def rollout_state(
    rollout: Rollout,
    progress: RolloutProgress | None,
    counts: Mapping[str, int],
    *,
    released_backlog: int,
    applied_percent: float,
    window: SendWindow | None,
    now: datetime,
) -> RolloutDecision:
    """Where the rollout is and what to release; at most one step forward per pass.

    A step's share is handled when the data plane applied it (``applied_percent``) and
    none of its released rows is left (``released_backlog``). Then it holds for the
    step's ``hold`` (only time inside the send window counts). After the hold, the
    STEP's own bounce and complaint rates (counts since the step began, against the
    baseline kept in status) are judged with the circuit breaker's rule; a failed gate
    keeps the step and is judged again every pass, so raising a threshold continues.
    The last step (100 %) has nothing after it: the ledger finishes the plan.
    """
    steps = rollout.steps
    started = progress is None
    if progress is None:
        progress = RolloutProgress(steps[0].percent, now, _baseline(counts))
    index = next((i for i, s in enumerate(steps) if s.percent >= progress.percent), len(steps) - 1)
    step = steps[index]
    progress = replace(progress, percent=step.percent)  # the steps may have been edited
    step_counts = {k: max(0, int(counts.get(k, 0)) - progress.baseline.get(k, 0)) for k in BASELINE_FIELDS}
    handled = applied_percent >= step.percent and released_backlog == 0
    if index == len(steps) - 1 or not handled:
        return RolloutDecision(
            step.percent,
            RolloutPhase.SENDING,
            replace(progress, hold_started_at=None),
            index,
            step_started=started,
            step_counts=step_counts,
        )
    hold_from = progress.hold_started_at or now
    progress = replace(progress, hold_started_at=hold_from)
    held = open_seconds(window, hold_from, now)
    left = step.hold.total_seconds() - held
    if left > 0:
        return RolloutDecision(
            step.percent,
            RolloutPhase.HOLDING,
            progress,
            index,
            step_started=started,
            held_seconds=held,
            wake_at=now + timedelta(seconds=left),
            step_counts=step_counts,
        )
    return _gate(rollout, index, progress, held, step_counts, counts, now)


def _gate(
    rollout: Rollout,
    index: int,
    progress: RolloutProgress,
    held: float,
    step_counts: Mapping[str, int],
    counts: Mapping[str, int],
    now: datetime,
) -> RolloutDecision:
    """A step held long enough: its own rates pass the gate (the next step) or fail it (kept)."""
    steps = rollout.steps
    step = steps[index]
    trip = circuit_breaker(
        dict(step_counts),
        max_bounce_rate=rollout.max_bounce_rate,
        max_complaint_rate=rollout.max_complaint_rate,
        min_sample=1,  # the gate judges what the step produced, however small the step
        fields="spec.rollout",
    )
    if trip is not None:
        gate = Trip(
            "RolloutGateFailed",
            f"rollout step {index + 1} of {len(steps)} ({step.percent:g}%): {trip.message}",
        )
        return RolloutDecision(
            step.percent,
            RolloutPhase.GATE_FAILED,
            progress,
            index,
            held_seconds=held,
            gate=gate,
            step_counts=step_counts,
        )
    nxt = steps[index + 1]
    return RolloutDecision(
        nxt.percent,
        RolloutPhase.SENDING,
        RolloutProgress(nxt.percent, now, _baseline(counts)),
        index + 1,
        step_started=True,
    )


def rollout_status(r: RolloutDecision, rollout: Rollout) -> dict[str, Any]:
    """``status.rollout``: the step, its baseline and hold, and the step's own rates."""
    sample, bounce_rate, complaint_rate = reputation_rates(dict(r.step_counts))
    return {
        "step": r.step + 1,
        "steps": len(rollout.steps),
        "percent": r.progress.percent,
        "state": r.phase.value,
        "stepStartedAt": format_time(r.progress.started_at),
        "holdStartedAt": format_time(r.progress.hold_started_at) if r.progress.hold_started_at else None,
        "heldSeconds": int(r.held_seconds),
        "holdSeconds": int(rollout.steps[r.step].hold.total_seconds()),
        "baseline": dict(r.progress.baseline),
        "stepSample": sample,
        "stepBounceRate": round(bounce_rate, 6),
        "stepComplaintRate": round(complaint_rate, 6),
    }


# --- all three, for one pass -------------------------------------------------------------------------------


@dataclass
class Steering:
    """What the campaign features want from this pass (``decide`` folds it into the Decision)."""

    release_percent: float = ALL_RELEASED
    winner: str | None = None
    holding: bool = False  # a rollout hold or the wait for the A/B decision: no pods
    pause: Trip | None = None  # a person must act (gate failed, winner needed): suspended, Stalled
    window: WindowState | None = None
    open_zones: tuple[str, ...] | None = None  # a per-recipient window: the zones that may send now
    wake_at: datetime | None = None
    message: str = ""
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def steer(
    spec: PlanSpec, status: Mapping[str, Any], view: PlanView | None, counts: PlanCounts, now: datetime
) -> Steering:
    """Release share, winner, holds and pauses from the spec, the last status and the data plane's view."""
    out = Steering()
    if spec.window is not None:
        waiting = _steer_window(out, spec.window, view, now)
        assert out.window is not None
        out.status["window"] = {
            "open": out.window.open,
            "nextChange": format_time(out.window.next_change) if out.window.next_change else None,
            "schedule": spec.window.describe(),
            **({} if out.open_zones is None else {"waiting": waiting, "openZones": len(out.open_zones)}),
        }
    if view is not None and view.state.finished:
        prior = status.get("rollout")
        if spec.rollout is not None and isinstance(prior, Mapping) and prior:
            out.status["rollout"] = {**prior, "state": RolloutPhase.COMPLETED.value}
        return out
    loaded = view is not None and view.recipients_loaded
    applied = view.release_percent if view is not None else 0.0
    released_backlog = view.released_backlog if view is not None else 0
    if spec.ab_test is not None:
        _steer_ab(out, spec, spec.ab_test, status, view, loaded, applied, released_backlog, now)
    if spec.rollout is not None:
        _steer_rollout(out, spec, spec.rollout, status, counts, loaded, applied, released_backlog, now)
    return out


def _steer_window(out: Steering, window: SendWindow, view: PlanView | None, now: datetime) -> int:
    """The window now; per recipient: the zones open now and how many rows wait for theirs.

    A per-recipient window is open while any zone with rows to send is; before the list
    is loaded no zone is known, and the plan is not held (loading goes on, nothing is queued).
    """
    if not window.per_recipient:
        out.window = window_state(window, now)
        return 0
    backlog = (view.zone_backlog if view is not None else None) or {}
    local = local_windows(window, list(backlog), now)
    out.open_zones = local.open_zones
    out.window = WindowState(bool(local.open_zones) or not backlog, local.next_change)
    return sum(n for zone, n in backlog.items() if zone not in local.open_zones)


def _steer_ab(
    out: Steering,
    spec: PlanSpec,
    ab: AbTest,
    status: Mapping[str, Any],
    view: PlanView | None,
    loaded: bool,
    applied: float,
    released_backlog: int,
    now: datetime,
) -> None:
    names = [v.name for v in spec.variants]
    raw = status.get("abTest")
    prior: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    finished_at = parse_time(prior.get("cohortFinishedAt"))
    if finished_at is None and loaded and applied >= ab.test_percent and released_backlog == 0:
        finished_at = now
    variant_counts = view.variant_counts if view is not None else []
    prior_winner = prior.get("winner") if prior.get("winner") in names else None
    if not ab.winner and prior_winner:
        choice = WinnerChoice(Verdict.CHOSEN, str(prior_winner), str(prior.get("reason") or ""))
    else:
        choice = choose_winner(variant_counts, ab, names, finished_at, now)
    decided_at = prior.get("decidedAt")
    if choice.verdict is Verdict.CHOSEN:
        out.winner = choice.winner
        out.release_percent = ALL_RELEASED
        if choice.winner != prior_winner:
            decided_at = format_time(now)
            was = f" (was {prior_winner})" if prior_winner else ""
            out.events.append(
                Event("Normal", "WinnerChosen", f"winner {choice.winner}{was}: {choice.reason}")
            )
    else:
        out.release_percent = ab.test_percent
        decided_at = None
        if choice.verdict is Verdict.NEED_PERSON:
            out.pause = Trip("WinnerNeeded", f"A/B test undecided: {choice.reason}")
        elif finished_at is not None:
            out.holding = True
            out.wake_at = choice.decide_at
            out.message = f"A/B test cohort sent; {choice.reason}"
    out.status["abTest"] = {
        "testPercent": ab.test_percent,
        "metric": ab.metric.value,
        "cohortFinishedAt": format_time(finished_at) if finished_at else None,
        "decideAt": format_time(finished_at + ab.decide_after) if finished_at else None,
        "winner": out.winner,
        "reason": choice.reason,
        "decidedAt": decided_at,
        "variants": variant_rows(variant_counts, names),
    }


def _steer_rollout(
    out: Steering,
    spec: PlanSpec,
    rollout: Rollout,
    status: Mapping[str, Any],
    counts: PlanCounts,
    loaded: bool,
    applied: float,
    released_backlog: int,
    now: datetime,
) -> None:
    if not loaded:
        out.release_percent = rollout.steps[0].percent
        return
    r = rollout_state(
        rollout,
        RolloutProgress.from_status(status.get("rollout")),
        counts.model_dump(),
        released_backlog=released_backlog,
        applied_percent=applied,
        window=spec.window,
        now=now,
    )
    out.release_percent = r.release_percent
    out.status["rollout"] = rollout_status(r, rollout)
    if r.step_started:
        out.events.append(
            Event(
                "Normal",
                "RolloutStepStarted",
                f"rollout step {r.step + 1} of {len(rollout.steps)}: "
                f"{r.release_percent:g}% of the list released",
            )
        )
    if r.phase is RolloutPhase.HOLDING:
        out.holding = True
        out.wake_at = r.wake_at
        left = rollout.steps[r.step].hold.total_seconds() - r.held_seconds
        inside = " (time inside the send window only)" if spec.window is not None else ""
        out.message = (
            f"holding rollout step {r.step + 1} ({r.release_percent:g}%) for {int(left)}s more{inside}"
        )
    elif r.gate is not None:
        out.pause = r.gate

"""Campaign features (issue 15) as pure rules: send windows, the A/B winner, rollout steps, and one pass.

Table tests without servers: ``operator/campaign.py`` decides from arguments only,
and ``decide`` folds its answer into the plan PUT, the phase, the conditions and the
Events; each case is a situation a campaign owner would recognise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support.decisions import NOW, SPEC, observed, view

from emailplan.contract.plans import PlanState, SendApi, VariantCounts
from emailplan.operator import clock
from emailplan.operator.campaign import (
    RolloutPhase,
    RolloutProgress,
    Verdict,
    choose_winner,
    open_seconds,
    rollout_state,
    window_state,
    zoned,
)
from emailplan.operator.decide import Phase, decide
from emailplan.operator.planspec import (
    AbFallback,
    AbMetric,
    AbTest,
    Rollout,
    RolloutStep,
    SendWindow,
    Templates,
    parse_clock,
    parse_duration,
    read_spec,
)
from emailplan.operator.settings import OperatorSettings
from emailplan.operator.validation import check_campaign, check_time_zone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def window(start: str, end: str, zone: str = "UTC", days: tuple[int, ...] = tuple(range(7))) -> SendWindow:
    s, e = parse_clock(start), parse_clock(end)
    assert s is not None and e is not None
    return SendWindow(days=frozenset(days), start=s, end=e, time_zone=zone)


def at(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone)  # type: ignore[misc]


OFFICE_BERLIN = window("09:00", "17:00", "Europe/Berlin", days=(0, 1, 2, 3, 4))
FRIDAY_NIGHT = window("22:00", "02:00", "UTC", days=(4,))

# --- send windows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "win", "now", "is_open", "change"),
    [
        (
            "Friday afternoon in Berlin: open until 17:00",
            OFFICE_BERLIN,
            at(BERLIN, 2026, 5, 1, 16, 59),
            True,
            at(BERLIN, 2026, 5, 1, 17, 0),
        ),
        (
            "Friday 17:00 sharp: closed until Monday 09:00",
            OFFICE_BERLIN,
            at(BERLIN, 2026, 5, 1, 17, 0),
            False,
            at(BERLIN, 2026, 5, 4, 9, 0),
        ),
        (
            "the evening before the spring-forward Sunday: Monday 09:00 is CEST (07:00 UTC)",
            OFFICE_BERLIN,
            at(BERLIN, 2026, 3, 27, 18, 0),
            False,
            datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
        ),
        (
            "the week before it, 09:00 is CET (08:00 UTC)",
            OFFICE_BERLIN,
            at(BERLIN, 2026, 3, 20, 18, 0),
            False,
            datetime(2026, 3, 23, 8, 0, tzinfo=UTC),
        ),
        (
            "a window crossing midnight belongs to the day it opens: Saturday 01:00 is Friday's",
            FRIDAY_NIGHT,
            datetime(2026, 5, 2, 1, 0, tzinfo=UTC),
            True,
            datetime(2026, 5, 2, 2, 0, tzinfo=UTC),
        ),
        (
            "after it closes, next Friday 22:00",
            FRIDAY_NIGHT,
            datetime(2026, 5, 2, 2, 0, tzinfo=UTC),
            False,
            datetime(2026, 5, 8, 22, 0, tzinfo=UTC),
        ),
        (
            "Friday 23:00 is inside",
            FRIDAY_NIGHT,
            datetime(2026, 5, 1, 23, 0, tzinfo=UTC),
            True,
            datetime(2026, 5, 2, 2, 0, tzinfo=UTC),
        ),
        (
            "Thursday night is not (the window opens on Fridays)",
            FRIDAY_NIGHT,
            datetime(2026, 4, 30, 23, 0, tzinfo=UTC),
            False,
            datetime(2026, 5, 1, 22, 0, tzinfo=UTC),
        ),
    ],
)
def test_window_state(case: str, win: SendWindow, now: datetime, is_open: bool, change: datetime) -> None:
    got = window_state(win, now)
    assert (got.open, got.next_change) == (is_open, change), case


@pytest.mark.parametrize(
    ("case", "win", "start", "end", "hours"),
    [
        (
            "spring forward: 00:00-06:00 Berlin lasts 5 h that night",
            window("00:00", "06:00", "Europe/Berlin"),
            at(BERLIN, 2026, 3, 29, 0, 0),
            at(BERLIN, 2026, 3, 29, 12, 0),
            5,
        ),
        (
            "fall back: 00:00-03:00 New York lasts 4 h that night",
            window("00:00", "03:00", "America/New_York"),
            at(NEW_YORK, 2026, 11, 1, 0, 0),
            at(NEW_YORK, 2026, 11, 1, 12, 0),
            4,
        ),
        (
            "a hold counts only inside the window: 16:00 to 10:00 next day is 2 h of 09-17",
            window("09:00", "17:00"),
            datetime(2026, 5, 1, 16, 0, tzinfo=UTC),
            datetime(2026, 5, 2, 10, 0, tzinfo=UTC),
            2,
        ),
        (
            "crossing midnight: 23:00 to 03:00 inside 22:00-02:00 every day is 3 h",
            window("22:00", "02:00"),
            datetime(2026, 5, 1, 23, 0, tzinfo=UTC),
            datetime(2026, 5, 2, 3, 0, tzinfo=UTC),
            3,
        ),
    ],
)
def test_open_seconds(case: str, win: SendWindow, start: datetime, end: datetime, hours: float) -> None:
    assert open_seconds(win, start, end) == hours * 3600, case


@pytest.mark.parametrize(
    ("case", "win", "instant", "shown"),
    [
        (
            "Berlin in winter: 09:00 local is 08:00 UTC, both shown",
            OFFICE_BERLIN,
            at(BERLIN, 2026, 12, 7, 9, 0),
            "2026-12-07 09:00 Europe/Berlin (2026-12-07T08:00:00Z)",
        ),
        (
            "Berlin in summer: 09:00 local is 07:00 UTC",
            OFFICE_BERLIN,
            at(BERLIN, 2026, 5, 4, 9, 0),
            "2026-05-04 09:00 Europe/Berlin (2026-05-04T07:00:00Z)",
        ),
        (
            "New York, a window that closes at 02:00 the next day (local date shown)",
            window("22:00", "02:00", "America/New_York"),
            at(NEW_YORK, 2026, 7, 4, 2, 0),
            "2026-07-04 02:00 America/New_York (2026-07-04T06:00:00Z)",
        ),
        ("a UTC window: once is enough", FRIDAY_NIGHT, at(UTC, 2026, 5, 1, 22, 0), "2026-05-01T22:00:00Z"),
    ],
)
def test_window_times_are_shown_in_the_plans_zone_and_utc(
    case: str, win: SendWindow, instant: datetime, shown: str
) -> None:
    assert zoned(win, instant.astimezone(UTC)) == shown, case


def test_without_a_window_all_time_counts() -> None:
    assert open_seconds(None, NOW, NOW + timedelta(minutes=15)) == 900
    assert open_seconds(None, NOW, NOW - timedelta(minutes=1)) == 0


def test_durations_and_clock_times_parse() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90) and parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("4 hours") is None and parse_duration("") is None
    assert parse_clock("23:59") is not None and parse_clock("24:00") is None and parse_clock("9:00") is None


# --- A/B winner --------------------------------------------------------------------------------------------


def ab(**kw: Any) -> AbTest:
    args: dict[str, Any] = dict(
        test_percent=20.0,
        metric=AbMetric.UNIQUE_OPENS,
        decide_after=timedelta(hours=4),
        min_sample=100,
        fallback=AbFallback.PAUSE,
        winner=None,
    )
    args.update(kw)
    return AbTest(**args)


def vc(
    name: str, sent: int, opened: int = 0, clicked: int = 0, delivered: int | None = None
) -> VariantCounts:
    return VariantCounts(
        name=name,
        recipients=sent,
        sent=sent,
        delivered=sent if delivered is None else delivered,
        opened=opened,
        clicked=clicked,
    )


FINISHED = NOW - timedelta(hours=5)  # the cohort finished 5 h ago: decideAfter (4 h) has passed
NAMES = ("plain", "bold")


@pytest.mark.parametrize(
    ("case", "counts", "test", "finished", "verdict", "winner", "why"),
    [
        ("cohort still sending", [], ab(), None, Verdict.WAIT, None, "is sending"),
        (
            "cohort sent 1 h ago: wait for decideAfter",
            [vc("plain", 500, 50), vc("bold", 500, 90)],
            ab(),
            NOW - timedelta(hours=1),
            Verdict.WAIT,
            None,
            "at 2026-05-01T15:00:00Z",
        ),
        (
            "clear winner by unique opens",
            [vc("plain", 500, 50), vc("bold", 500, 90)],
            ab(),
            FINISHED,
            Verdict.CHOSEN,
            "bold",
            "plain 10.00%, bold 18.00%",
        ),
        (
            "a person decides before the data: at once",
            [],
            ab(winner="plain"),
            None,
            Verdict.CHOSEN,
            "plain",
            "spec.abTest.winner",
        ),
        (
            "clicks per delivered: delivered is the denominator",
            [vc("plain", 500, clicked=40, delivered=400), vc("bold", 500, clicked=45, delivered=500)],
            ab(metric=AbMetric.CLICKS_PER_DELIVERED),
            FINISHED,
            Verdict.CHOSEN,
            "plain",
            "plain 10.00%, bold 9.00%",
        ),
        (
            "too little data, fallback pause: a person must decide",
            [vc("plain", 99, 50), vc("bold", 500, 90)],
            ab(),
            FINISHED,
            Verdict.NEED_PERSON,
            None,
            "plain below minSample 100 sent",
        ),
        (
            "too little data, fallback firstVariant",
            [vc("plain", 99, 50), vc("bold", 500, 90)],
            ab(fallback=AbFallback.FIRST_VARIANT),
            FINISHED,
            Verdict.CHOSEN,
            "plain",
            "fallback firstVariant",
        ),
        (
            "exactly minSample is enough",
            [vc("plain", 100, 10), vc("bold", 100, 11)],
            ab(),
            FINISHED,
            Verdict.CHOSEN,
            "bold",
            "best uniqueOpens",
        ),
        (
            "a variant with no counts at all has too little data",
            [vc("bold", 500, 90)],
            ab(),
            FINISHED,
            Verdict.NEED_PERSON,
            None,
            "plain below minSample",
        ),
        (
            "a tie (same rate, different sizes) is no winner: the fallback applies",
            [vc("plain", 300, 30), vc("bold", 500, 50)],
            ab(fallback=AbFallback.FIRST_VARIANT),
            FINISHED,
            Verdict.CHOSEN,
            "plain",
            "tied between plain, bold",
        ),
        (
            "a tie with fallback pause",
            [vc("plain", 300, 30), vc("bold", 500, 50)],
            ab(),
            FINISHED,
            Verdict.NEED_PERSON,
            None,
            "tied",
        ),
    ],
)
def test_choose_winner(
    case: str,
    counts: list[VariantCounts],
    test: AbTest,
    finished: datetime | None,
    verdict: Verdict,
    winner: str | None,
    why: str,
) -> None:
    got = choose_winner(counts, test, NAMES, finished, NOW)
    assert (got.verdict, got.winner) == (verdict, winner), (case, got)
    assert why in got.reason, (case, got.reason)


# --- rollout steps -----------------------------------------------------------------------------------------

STEPS = Rollout(
    steps=(
        RolloutStep(1, timedelta(minutes=15)),
        RolloutStep(10, timedelta(minutes=30)),
        RolloutStep(100, timedelta(0)),
    ),
    max_bounce_rate=0.05,
    max_complaint_rate=0.001,
)


def progress(percent: float, hold_started: datetime | None = None, **baseline: int) -> RolloutProgress:
    return RolloutProgress(percent, NOW - timedelta(hours=1), {"sent": 0, **baseline}, hold_started)


@pytest.mark.parametrize(
    ("case", "prog", "counts", "backlog", "applied", "win", "release", "phase", "step"),
    [
        ("first pass: step 1 releases 1 %", None, {}, 0, 0, None, 1, RolloutPhase.SENDING, 0),
        (
            "the data plane has not applied the step yet",
            progress(1),
            {},
            0,
            0,
            None,
            1,
            RolloutPhase.SENDING,
            0,
        ),
        ("the step's rows are going out", progress(1), {"sent": 5}, 5, 1, None, 1, RolloutPhase.SENDING, 0),
        (
            "all handled: the hold starts",
            progress(1),
            {"sent": 10, "delivered": 10},
            0,
            1,
            None,
            1,
            RolloutPhase.HOLDING,
            0,
        ),
        (
            "hold over, clean step: step 2 releases 10 %",
            progress(1, NOW - timedelta(minutes=15)),
            {"sent": 10, "delivered": 10},
            0,
            1,
            None,
            10,
            RolloutPhase.SENDING,
            1,
        ),
        (
            "hold over, but 1 of 10 bounced: the gate fails",
            progress(1, NOW - timedelta(minutes=15)),
            {"sent": 10, "delivered": 9, "bounced": 1},
            0,
            1,
            None,
            1,
            RolloutPhase.GATE_FAILED,
            0,
        ),
        (
            "exactly at the threshold (5 %) passes",
            progress(1, NOW - timedelta(minutes=15)),
            {"sent": 20, "delivered": 19, "bounced": 1},
            0,
            1,
            None,
            10,
            RolloutPhase.SENDING,
            1,
        ),
        (
            "bounces before the step began do not count against it",
            progress(10, NOW - timedelta(minutes=30), delivered=9, bounced=1),
            {"sent": 110, "delivered": 109, "bounced": 1},
            0,
            10,
            None,
            100,
            RolloutPhase.SENDING,
            2,
        ),
        (
            "hold paused outside the window: of 20 min since, 10 inside 11:50-18:00: still holding",
            progress(1, NOW - timedelta(minutes=20)),
            {"sent": 10, "delivered": 10},
            0,
            1,
            window("11:50", "18:00"),
            1,
            RolloutPhase.HOLDING,
            0,
        ),
        (
            "the last step has no hold: the ledger finishes the plan",
            progress(100),
            {"sent": 300, "delivered": 300},
            0,
            100,
            None,
            100,
            RolloutPhase.SENDING,
            2,
        ),
    ],
)
def test_rollout_state(
    case: str,
    prog: RolloutProgress | None,
    counts: dict[str, int],
    backlog: int,
    applied: float,
    win: SendWindow | None,
    release: float,
    phase: RolloutPhase,
    step: int,
) -> None:
    got = rollout_state(
        STEPS, prog, counts, released_backlog=backlog, applied_percent=applied, window=win, now=NOW
    )
    assert (got.release_percent, got.phase, got.step) == (release, phase, step), (case, got)


def test_rollout_gate_names_the_rates_and_continues_when_thresholds_are_raised() -> None:
    prog = progress(1, NOW - timedelta(minutes=15))
    counts = {"sent": 10, "delivered": 9, "bounced": 1}
    failed = rollout_state(STEPS, prog, counts, released_backlog=0, applied_percent=1, window=None, now=NOW)
    assert failed.gate is not None and failed.gate.reason == "RolloutGateFailed"
    assert "step 1 of 3 (1%)" in failed.gate.message and "bounce rate 10.00%" in failed.gate.message
    assert failed.progress == prog  # nothing hidden: the next pass judges the same step again
    raised = Rollout(STEPS.steps, max_bounce_rate=0.2, max_complaint_rate=0.001)
    passed = rollout_state(raised, prog, counts, released_backlog=0, applied_percent=1, window=None, now=NOW)
    assert passed.release_percent == 10 and passed.step_started
    assert dict(passed.progress.baseline) == {"sent": 10, "delivered": 9, "bounced": 1, "complained": 0}


# --- validation the schema cannot do --------------------------------------------------------


def test_unknown_time_zone_and_broken_variant_template_name_the_field() -> None:
    assert check_time_zone("Europe/Berlin") == []
    assert (
        "schedule.window.timeZone: 'Mars/Olympus' is not an IANA time zone"
        in check_time_zone("Mars/Olympus")[0]
    )
    spec = read_spec(
        {
            **SPEC,
            **SPEC_AB,
            "variants": [{"name": "plain"}, {"name": "bold", "subject": "{{ nmae }}"}],
            "schedule": {"window": {"from": "09:00", "to": "17:00", "timeZone": "Mars/Olympus"}},
        },
        OperatorSettings(),
    )
    o = observed(spec=spec)
    assert o.templates is not None
    problems = check_campaign(spec, o.templates, {"email": "a@example.com", "name": "A"})
    assert any(p.startswith("variants[1] (bold).subject: 'nmae' is undefined") for p in problems), problems
    assert any(p.startswith("schedule.window.timeZone") for p in problems), problems


# --- one pass with the features: decide() ---------------------------------------------------

SPEC_AB: dict[str, Any] = {
    "variants": [{"name": "plain"}, {"name": "bold", "subject": "Big news"}],
    "abTest": {"testPercent": 20, "decideAfter": "4h", "minSample": 100},
}
SPEC_ROLLOUT: dict[str, Any] = {
    "rollout": {"steps": [{"percent": 1, "hold": "15m"}, {"percent": 10, "hold": "30m"}, {"percent": 100}]}
}
SPEC_WINDOW: dict[str, Any] = {
    "schedule": {"window": {"from": "09:00", "to": "17:00", "timeZone": "Europe/Berlin"}}
}
COUNTS = {"total": 1000, "created": 1000}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def conditions_messages(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["message"] for c in status.get("conditions", [])}


def run(o: Any) -> tuple[Any, dict[str, Any]]:
    out = decide(o)
    return out, {**o.status, **out.status}


def reasons(out: Any) -> list[str]:
    """The pass's Events, without the list's own (RecipientsLoaded is reported on the first pass)."""
    return [e.reason for e in out.events if e.reason != "RecipientsLoaded"]


def test_ab_test_from_cohort_to_winner() -> None:
    # Registered with the cohort only: 20 % released, variants and no winner.
    out, status = run(observed(spec_patch=SPEC_AB))
    assert out.payload is not None and out.payload.release_percent == 20 and out.payload.winner is None
    assert out.payload.test_percent == 20 and out.payload.variant_names() == ["plain", "bold"]
    # The cohort goes out: pods for the 200 released rows.
    sending = view(spec=SPEC_AB, release=20, released_backlog=200, counts=COUNTS)
    out, status = run(observed(spec_patch=SPEC_AB, view=sending, status=status))
    assert out.phase is Phase.SENDING and out.replicas == 2 and out.payload is None
    # The cohort is sent: hold, no pods, the decision time in status.
    counts = [vc("plain", 100, 10).model_dump(), vc("bold", 100, 30).model_dump()]
    sent = view(
        spec=SPEC_AB, release=20, counts={"total": 1000, "created": 800, "sent": 200}, variant_counts=counts
    )
    out, status = run(observed(spec_patch=SPEC_AB, view=sent, status=status))
    assert out.phase is Phase.HOLDING and out.replicas == 0 and out.payload is None
    assert status["abTest"]["decideAt"] == "2026-05-01T16:00:00Z" and status["abTest"]["winner"] is None
    assert [v["openRate"] for v in status["abTest"]["variants"]] == [0.1, 0.3]
    assert conditions(status)["Ready"][0] == "True" and conditions(status)["Reconciling"][0] == "True"
    # 4 h later the data decides: the rest gets the winner, an Event says why.
    later = NOW + timedelta(hours=4)
    out, status = run(observed(spec_patch=SPEC_AB, view=sent, status=status, now=later))
    assert out.payload is not None and out.payload.winner == "bold" and out.payload.release_percent == 100
    assert [(e.reason, e.message) for e in out.events] == [
        ("WinnerChosen", "winner bold: best uniqueOpens: plain 10.00%, bold 30.00%")
    ]
    assert status["abTest"]["winner"] == "bold" and status["abTest"]["decidedAt"] == "2026-05-01T16:00:00Z"
    # Decided once: later counts do not flip it, no second Event.
    flipped = [vc("plain", 100, 90).model_dump(), vc("bold", 100, 30).model_dump()]
    rest = view(
        spec=SPEC_AB,
        release=100,
        winner="bold",
        counts={"total": 1000, "created": 800},
        variant_counts=flipped,
    )
    out, status = run(observed(spec_patch=SPEC_AB, view=rest, status=status, now=later))
    assert out.payload is None and out.events == [] and out.phase is Phase.SENDING and out.replicas == 2


def test_ab_test_needing_a_person_pauses_until_one_decides() -> None:
    few = [vc("plain", 50, 10).model_dump(), vc("bold", 50, 30).model_dump()]
    sent = view(
        spec=SPEC_AB, release=20, counts={"total": 500, "created": 400, "sent": 100}, variant_counts=few
    )
    status = {"abTest": {"cohortFinishedAt": "2026-05-01T07:00:00Z"}}
    out, status = run(observed(spec_patch=SPEC_AB, view=sent, status=status))
    assert out.payload is not None and out.payload.suspended and out.phase is Phase.SUSPENDED
    assert conditions(status)["Suspended"] == ("True", "WinnerNeeded")
    assert conditions(status)["Stalled"] == ("True", "WinnerNeeded")
    assert "set spec.abTest.winner" in status["message"]
    assert [(e.type, e.reason) for e in out.events if e.reason != "RecipientsLoaded"] == [
        ("Warning", "WinnerNeeded")
    ]
    chosen = {**SPEC_AB, "abTest": {**SPEC_AB["abTest"], "winner": "plain"}}
    out, status = run(
        observed(spec_patch=chosen, view=view(spec=SPEC_AB, release=20, suspended=True), status=status)
    )
    assert out.payload is not None and not out.payload.suspended and out.payload.winner == "plain"
    assert [e.reason for e in out.events] == ["Resumed", "WinnerChosen"]
    assert (
        conditions(status)["Stalled"][0] == "False"
        and status["abTest"]["reason"] == "set by spec.abTest.winner"
    )


def test_rollout_gate_pauses_and_raising_the_threshold_continues() -> None:
    out, status = run(
        observed(spec_patch=SPEC_ROLLOUT, view=view(spec=SPEC_ROLLOUT, release=0, counts=COUNTS))
    )
    assert out.payload is not None and out.payload.release_percent == 1
    assert reasons(out) == ["RolloutStepStarted"] and status["rollout"]["step"] == 1
    # The 1 % are handled: hold 15 min, no pods, woken when the hold ends.
    handled = {"total": 1000, "created": 990, "sent": 10, "delivered": 8, "bounced": 2}
    step1 = view(spec=SPEC_ROLLOUT, release=1, counts=handled)
    out, status = run(observed(spec_patch=SPEC_ROLLOUT, view=step1, status=status))
    assert out.phase is Phase.HOLDING and out.replicas == 0 and status["rollout"]["state"] == "Holding"
    assert "holding rollout step 1 (1%)" in status["message"]
    # After the hold, 20 % bounced: paused, a Warning names the rates, Stalled.
    later = NOW + timedelta(minutes=15)
    out, status = run(observed(spec_patch=SPEC_ROLLOUT, view=step1, status=status, now=later))
    assert out.payload is not None and out.payload.suspended and out.payload.release_percent == 1
    assert out.phase is Phase.SUSPENDED and out.replicas == 0
    assert conditions(status)["Suspended"] == ("True", "RolloutGateFailed")
    assert conditions(status)["Stalled"] == ("True", "RolloutGateFailed")
    warning = next(e for e in out.events if e.reason == "RolloutGateFailed")
    assert "bounce rate 20.00% over the limit 5.00%" in warning.message
    # ... and says what to change to continue: the field, with a value that would pass.
    assert "raise spec.rollout.maxBounceRate above 20.00% to continue" in warning.message
    assert "spec.rollout.maxBounceRate" in conditions_messages(status)["Suspended"]
    # The owner raises the step threshold: step 2 starts with one PUT.
    raised = {"rollout": {**SPEC_ROLLOUT["rollout"], "maxBounceRate": 0.25}, "safety": {"maxBounceRate": 0.5}}
    paused = view(spec=SPEC_ROLLOUT, release=1, counts=handled, suspended=True)
    out, status = run(observed(spec_patch=raised, view=paused, status=status, now=later, generation=2))
    assert out.payload is not None and not out.payload.suspended and out.payload.release_percent == 10
    assert {e.reason for e in out.events} == {"Resumed", "RolloutStepStarted"}
    assert status["rollout"]["step"] == 2 and status["rollout"]["baseline"]["bounced"] == 2


def test_window_closes_mid_send_and_opens_again() -> None:
    sending = view(spec=SPEC_WINDOW, counts={"total": 1000, "created": 600, "sent": 400})
    inside = datetime(2026, 5, 1, 16, 59, 30, tzinfo=BERLIN)
    out, status = run(observed(spec_patch=SPEC_WINDOW, view=sending, now=inside))
    assert out.phase is Phase.SENDING and conditions(status)["InSendWindow"] == ("True", "InsideWindow")
    assert reasons(out) == [] and out.requeue_after == 1.0
    # 17:00: paused (the one channel), phase Scheduled, opening time in the condition.
    closed = inside + timedelta(seconds=30)
    out, status = run(observed(spec_patch=SPEC_WINDOW, view=sending, now=closed, status=status))
    assert out.payload is not None and out.payload.suspended and out.replicas == 0
    assert out.phase is Phase.SCHEDULED and conditions(status)["InSendWindow"] == ("False", "OutsideWindow")
    message = next(c["message"] for c in status["conditions"] if c["type"] == "InSendWindow")
    # Saturday 09:00 CEST (every day by default), in the plan's zone first, then UTC.
    assert "opens at 2026-05-02 09:00 Europe/Berlin (2026-05-02T07:00:00Z)" in message
    assert "opens at 2026-05-02 09:00 Europe/Berlin (2026-05-02T07:00:00Z)" in status["message"]
    assert [e.reason for e in out.events] == ["WindowClosed"]
    assert conditions(status)["Suspended"][0] == "False"  # nobody needs to act
    # Just before it opens the pass wakes at the opening, not later.
    waiting = view(spec=SPEC_WINDOW, counts={"total": 1000, "created": 600, "sent": 400}, suspended=True)
    before = datetime(2026, 5, 2, 8, 59, 58, tzinfo=BERLIN)
    out, status = run(observed(spec_patch=SPEC_WINDOW, view=waiting, now=before, status=status))
    assert out.requeue_after == pytest.approx(2.0) and out.events == []
    out, status = run(
        observed(spec_patch=SPEC_WINDOW, view=waiting, now=before + timedelta(seconds=2), status=status)
    )
    assert out.payload is not None and not out.payload.suspended and out.phase is Phase.SENDING
    assert [e.reason for e in out.events] == ["WindowOpened"] and out.replicas == 2


def test_rollout_hold_counts_only_inside_the_window() -> None:
    weekdays = {**SPEC_WINDOW["schedule"]["window"], "days": ["Mon", "Tue", "Wed", "Thu", "Fri"]}
    spec = {**SPEC_ROLLOUT, "schedule": {"window": weekdays}}
    status = {
        "rollout": {
            "percent": 1,
            "stepStartedAt": "2026-05-01T14:00:00Z",
            "holdStartedAt": "2026-05-01T14:55:00Z",  # 16:55 in Berlin: 5 min before closing
            "baseline": {},
        }
    }
    step1 = view(spec=spec, release=1, counts={"total": 1000, "created": 990, "sent": 10, "delivered": 10})
    monday = datetime(2026, 5, 4, 9, 5, tzinfo=BERLIN)  # 5 more minutes inside: 10 of 15
    out, status = run(observed(spec_patch=spec, view=step1, status=status, now=monday))
    assert out.phase is Phase.HOLDING and status["rollout"]["heldSeconds"] == 600
    out, status = run(observed(spec_patch=spec, view=step1, status=status, now=monday + timedelta(minutes=5)))
    assert out.payload is not None and out.payload.release_percent == 10 and status["rollout"]["step"] == 2


def test_finished_plan_keeps_its_winner_and_takes_no_steps() -> None:
    status = {"abTest": {"winner": "bold", "reason": "best uniqueOpens"}}
    done = view(
        spec=SPEC_AB, state=PlanState.DONE, release=100, winner="bold", counts={"total": 10, "sent": 10}
    )
    out, status = run(observed(spec_patch=SPEC_AB, view=done, status=status))
    assert out.phase is Phase.COMPLETED and out.payload is None and status["abTest"]["winner"] == "bold"
    assert reasons(out) == ["Completed"]


def test_completed_rollout_says_completed() -> None:
    """Issue 20 #6: once the plan is done, ``status.rollout.state`` no longer claims Sending."""
    last = view(spec=SPEC_ROLLOUT, release=100, counts={"total": 1000, "created": 5, "sent": 995})
    status = {"rollout": {"percent": 100, "stepStartedAt": "2026-05-01T11:00:00Z", "baseline": {}}}
    out, status = run(observed(spec_patch=SPEC_ROLLOUT, view=last, status=status))
    assert status["rollout"]["state"] == "Sending" and status["rollout"]["step"] == 3
    done = view(spec=SPEC_ROLLOUT, state=PlanState.DONE, release=100, counts={"total": 1000, "sent": 1000})
    out, status = run(observed(spec_patch=SPEC_ROLLOUT, view=done, status=status))
    assert out.phase is Phase.COMPLETED and status["rollout"]["state"] == "Completed"
    assert status["rollout"]["step"] == 3 and status["rollout"]["percent"] == 100


# --- the test clock ----------------------------------------------------------------------------------------


def test_clock_offset_only_in_dev_mode(tmp_path: Any) -> None:
    offset = tmp_path / "offset"
    with pytest.raises(
        ValueError, match="EMAILPLAN_CLOCK_OFFSET_FILE is honoured only with EMAILPLAN_DEV_MODE=1"
    ):
        OperatorSettings(api_key="k", dev_mode=False, clock_offset_file=str(offset))  # type: ignore[arg-type]
    settings = OperatorSettings(dev_mode=True, clock_offset_file=str(offset))
    assert clock.offset_seconds(settings) == 0  # no file yet: real time
    offset.write_text("86400\n")
    assert clock.offset_seconds(settings) == 86400  # read on every pass: tests move it between passes
    offset.write_text("soon")
    assert clock.offset_seconds(settings) == 0
    assert clock.offset_seconds(OperatorSettings(dev_mode=True)) == 0


def test_a_person_overrides_the_chosen_winner() -> None:
    status = {"abTest": {"winner": "bold", "reason": "best uniqueOpens", "decidedAt": "2026-05-01T10:00:00Z"}}
    chosen = {**SPEC_AB, "abTest": {**SPEC_AB["abTest"], "winner": "plain"}}
    rest = view(spec=SPEC_AB, release=100, winner="bold", counts={"total": 1000, "created": 500})
    out, status = run(observed(spec_patch=chosen, view=rest, status=status, generation=2))
    assert out.payload is not None and out.payload.winner == "plain" and out.payload.release_percent == 100
    assert [(e.reason, e.message) for e in out.events if e.reason == "WinnerChosen"] == [
        ("WinnerChosen", "winner plain (was bold): set by spec.abTest.winner")
    ]
    assert status["abTest"]["decidedAt"] == "2026-05-01T12:00:00Z"


def test_bulk_sending_reaches_the_data_plane_and_its_templates_are_checked_first() -> None:
    """``ses.sendApi: bulk`` goes out in the plan PUT; the operator refuses templates SES cannot fill."""
    o = observed(spec_patch={"ses": {"sendApi": "bulk"}})
    out = decide(o)
    assert out.payload is not None and out.payload.ses.send_api is SendApi.BULK
    assert decide(observed()).payload.ses.send_api is SendApi.RAW  # type: ignore[union-attr]

    spec = read_spec({**SPEC, "ses": {"sendApi": "bulk"}}, OperatorSettings())
    fine = Templates("Hello {{ name }}", None, "Hi {{ name }}, code {{ code }}")
    assert check_campaign(spec, fine, {"email": "a@example.com", "name": "A", "code": "C"}) == []
    filtered = Templates("Hello {{ name | upper }}", None, "{% if name %}Hi{% endif %}")
    problems = check_campaign(spec, filtered, {"email": "a@example.com", "name": "A"})
    assert any(p.startswith("ses.sendApi bulk: subject") for p in problems), problems
    assert any(p.startswith("ses.sendApi bulk: text") for p in problems), problems

"""Table tests of a follow-up's pure decisions: when it takes its audience, what status and phase say."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from support.decisions import NOW, SPEC, observed, view

from emailplan.contract.followups import FollowUpOutcome, FromPlanSource
from emailplan.contract.plans import LoadJob, LoadSourceKind, LoadState, PlanState
from emailplan.contract.spec import EmailPlanSpec
from emailplan.contract.spec_followup import FromPlanSpec
from emailplan.operator import followup
from emailplan.operator.decide import LoadAction, Phase, decide

SOURCE_UID = "7e57a11e-0000-4000-8000-00000000000a"
FOLLOW = {"recipients": {"fromPlan": {"name": "spring", "outcome": "notOpened", "after": "48h"}}}


def source(phase: str | None, completed: timedelta | None = None) -> followup.SourcePlan:
    return followup.SourcePlan(
        uid=SOURCE_UID, phase=phase, completed_at=NOW - completed if completed is not None else None
    )


@pytest.mark.parametrize(
    ("seen", "ready", "words"),
    [
        (None, False, "waiting for EmailPlan spring (not found in this namespace)"),
        (source("Sending"), False, "waiting for EmailPlan spring to complete (it is Sending)"),
        (source(None), False, "(it is Pending)"),
        (
            source("Completed", timedelta(hours=1)),
            False,
            "waiting until 2026-05-03T11:00:00Z (48h after spring",
        ),
        (source("Completed", timedelta(hours=47, minutes=59)), False, "waiting until 2026-05-01T12:01:00Z"),
        (source("Completed", timedelta(hours=48)), True, ""),
        (source("Completed", timedelta(days=30)), True, ""),
        (
            followup.SourcePlan(uid="", phase="Completed", completed_at=NOW - timedelta(days=3)),
            False,
            "registered",
        ),
    ],
)
def test_gate_waits_for_the_source_to_complete_and_after_to_pass(
    seen: followup.SourcePlan | None, ready: bool, words: str
) -> None:
    spec = FromPlanSpec(name="spring", outcome=FollowUpOutcome.NOT_OPENED, after="48h")
    g = followup.gate(spec, seen, NOW)
    assert g.ready is ready
    assert words in g.message
    if ready:
        assert g.source == FromPlanSource(plan_id=uuid.UUID(SOURCE_UID), outcome=FollowUpOutcome.NOT_OPENED)


def test_after_defaults_to_at_once() -> None:
    spec = FromPlanSpec(name="spring", outcome=FollowUpOutcome.FAILED)
    assert followup.gate(spec, source("Completed", timedelta(0)), NOW).ready


def taken(accepted: int, suppressed: int) -> LoadJob:
    return LoadJob(
        state=LoadState.LOADED,
        source=LoadSourceKind.FROM_PLAN,
        from_plan=FromPlanSource(plan_id=uuid.UUID(SOURCE_UID), outcome=FollowUpOutcome.NOT_OPENED),
        accepted=accepted,
        suppressed=suppressed,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("seen", "plan_view", "phase", "load", "message"),
    [
        (source("Sending"), None, Phase.PENDING, None, "waiting for EmailPlan spring to complete"),
        (
            source("Sending"),
            view(state=PlanState.LOADING, loaded=False, spec=FOLLOW),
            Phase.SCHEDULED,
            None,
            "waiting for EmailPlan spring to complete",
        ),
        (
            source("Completed", timedelta(hours=2)),
            view(state=PlanState.LOADING, loaded=False, spec=FOLLOW),
            Phase.SCHEDULED,
            None,
            "waiting until 2026-05-03T10:00:00Z",
        ),
        (
            source("Completed", timedelta(hours=49)),
            view(state=PlanState.LOADING, loaded=False, spec=FOLLOW),
            Phase.LOADING,
            LoadAction.FROM_PLAN,
            "loading the notOpened recipients of EmailPlan spring",
        ),
        (
            None,  # the source was deleted after the audience was taken: nothing changes
            view(counts={"total": 700, "created": 690, "suppressed": 10}, load=taken(690, 10), spec=FOLLOW),
            Phase.SENDING,
            None,
            "sending at up to 100/s",
        ),
    ],
)
def test_a_follow_up_waits_then_loads_its_audience_once(
    seen: followup.SourcePlan | None, plan_view: Any, phase: Phase, load: LoadAction | None, message: str
) -> None:
    out = decide(observed(spec_patch=FOLLOW, source=seen, view=plan_view))
    assert out.phase is phase
    assert out.load is load
    assert message in out.status["message"]
    if load is LoadAction.FROM_PLAN:
        assert out.load_from == FromPlanSource(
            plan_id=uuid.UUID(SOURCE_UID), outcome=FollowUpOutcome.NOT_OPENED
        )
    if phase is Phase.SCHEDULED:
        assert out.replicas == 0


def test_status_shows_when_the_audience_is_taken_and_how_many_matched() -> None:
    waiting = decide(
        observed(
            spec_patch=FOLLOW,
            source=source("Completed", timedelta(hours=2)),
            view=view(state=PlanState.LOADING, loaded=False, spec=FOLLOW),
        )
    )
    assert waiting.status["audience"] == {
        "plan": "spring",
        "outcome": "notOpened",
        "takesAt": "2026-05-03T10:00:00Z",
    }
    assert waiting.requeue_after == 5.0  # the pass interval; the wake-up at takesAt is further away
    soon = decide(
        observed(
            spec_patch=FOLLOW,
            source=source("Completed", timedelta(hours=47, minutes=59, seconds=58)),
            view=view(state=PlanState.LOADING, loaded=False, spec=FOLLOW),
        )
    )
    assert soon.requeue_after == pytest.approx(2.0)  # be there when it is time
    loaded = decide(
        observed(
            spec_patch=FOLLOW,
            status={"audience": waiting.status["audience"]},
            view=view(
                counts={"total": 700, "created": 690, "suppressed": 10}, load=taken(690, 10), spec=FOLLOW
            ),
        )
    )
    assert loaded.status["audience"] == {
        "plan": "spring",
        "outcome": "notOpened",
        "takesAt": "2026-05-03T10:00:00Z",
        "matched": 700,
        "suppressed": 10,
        "takenAt": "2026-05-01T12:00:00Z",
    }


@pytest.mark.parametrize(
    "other",
    [
        {"inline": [{"email": "a@example.com"}]},
        {"s3": {"bucket": "lists", "key": "a.csv"}},
        {"configMapRef": {"name": "l", "key": "k"}},
    ],
)
def test_from_plan_excludes_every_other_source(other: dict[str, Any]) -> None:
    recipients = {"fromPlan": {"name": "spring", "outcome": "notOpened"}, **other}
    with pytest.raises(ValidationError, match=r"recipients\.fromPlan"):
        EmailPlanSpec.model_validate({**SPEC, "recipients": recipients})


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"name": "spring", "outcome": "opened"}, "outcome"),
        ({"name": "spring", "outcome": "notOpened", "after": "2 days"}, "after"),
        ({"name": "Spring_Launch", "outcome": "notOpened"}, "name"),
        ({"outcome": "notOpened"}, "name"),
    ],
)
def test_bad_from_plan_names_the_field(block: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        EmailPlanSpec.model_validate({**SPEC, "recipients": {"fromPlan": block}})


RETRY = {"retry": {"generation": 2}}


@pytest.mark.parametrize(
    ("state", "done_before", "patch", "asked"),
    [
        (PlanState.DONE, 1, RETRY, 2),  # a newer generation on a done plan: retry it
        (PlanState.DONE, 2, RETRY, None),  # that generation ran already: nothing
        (PlanState.DONE, 3, RETRY, None),  # a lower one: nothing either
        (PlanState.READY, 0, RETRY, None),  # still sending: the retry waits until it is done
        (PlanState.STOPPED, 0, RETRY, None),  # a stopped plan is never retried
        (PlanState.DONE, 0, {}, None),  # no retry asked
    ],
)
def test_a_retry_runs_once_per_generation_on_a_done_plan(
    state: PlanState, done_before: int, patch: dict[str, Any], asked: int | None
) -> None:
    seen = view(state=state, counts={"total": 10, "sent": 8, "failed": 2}, spec=patch).model_copy(
        update={"retry_generation": done_before}
    )
    out = decide(observed(spec_patch=patch, view=seen))
    assert (out.retry.generation if out.retry is not None else None) == asked
    if patch:
        assert out.status["retry"] == {"requested": 2, "generation": done_before}


@pytest.mark.parametrize(
    ("state", "done_before", "words"),
    [
        (PlanState.READY, 0, "retry 2 waits until this send is done"),  # asked while still sending
        (PlanState.SUSPENDED, 1, "retry 2 waits until this send is done"),
        (PlanState.READY, 2, None),  # the retry itself is sending
        (PlanState.DONE, 1, None),  # asked of a done plan: it runs in this pass
    ],
)
def test_a_retry_that_cannot_run_yet_says_why_in_the_message(
    state: PlanState, done_before: int, words: str | None
) -> None:
    seen = view(state=state, counts={"total": 10, "sent": 6, "created": 4}, spec=RETRY).model_copy(
        update={"retry_generation": done_before}
    )
    out = decide(observed(spec_patch=RETRY, view=seen))
    message = out.status["message"]
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    if words is None:
        assert "retry" not in message
    else:
        assert words in message and words in ready["message"], message


def test_a_retried_plan_shows_sending_then_completes_again_with_a_new_time() -> None:
    first_done = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    completed = {"phase": "Completed", "completedAt": first_done, "startedAt": first_done}
    sending = decide(
        observed(
            spec_patch=RETRY,
            status=completed,
            view=view(
                state=PlanState.READY, counts={"total": 10, "sent": 8, "created": 2, "retried": 2}, spec=RETRY
            ).model_copy(update={"retry_generation": 2}),
        )
    )
    assert sending.phase is Phase.SENDING and sending.replicas >= 1 and sending.retry is None
    assert "waits" not in sending.status["message"]  # the retry is what sends
    assert sending.status["retried"] == 2
    again = decide(
        observed(
            spec_patch=RETRY,
            status={**completed, "phase": "Sending"},
            view=view(
                state=PlanState.DONE, counts={"total": 10, "sent": 10, "retried": 2}, spec=RETRY
            ).model_copy(update={"retry_generation": 2}),
        )
    )
    assert again.phase is Phase.COMPLETED and again.status["completedAt"] == "2026-05-01T12:00:00Z"
    assert "Completed" in [e.reason for e in again.events]  # the completion is announced again

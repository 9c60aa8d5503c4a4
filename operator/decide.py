"""One reconcile pass as a pure function: what was observed in, everything to do out.

``handlers.reconcile`` observes once (spec, last status, validation problems,
the data plane's plan view with counts and load job, the Deployment's replicas)
and applies the :class:`Decision` this module returns: the plan to PUT (with the
effective suspension, the only channel that pauses a plan), whether to start a
load, the replicas, one status patch and the Events. Nothing here does I/O,
reads a clock or imports kopf (import-linter keeps it so), which is what makes
the rules table-testable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emailplan.contract.followups import FromPlanSource, RetryRequest
from emailplan.contract.plans import (
    ALL_RELEASED,
    BACKLOG_PER_REPLICA,
    FailureReason,
    LoadJob,
    LoadState,
    PlanCounts,
    PlanPayload,
    PlanState,
    PlanView,
    SesOptions,
    Unsubscribe,
)
from emailplan.contract.spec_status import Phase as Phase  # the one definition; re-exported for callers
from emailplan.operator import account as accounts
from emailplan.operator import campaign, followup, loads, outages
from emailplan.operator import rules as d
from emailplan.operator.loads import EVENT_ROWS_CHARS, FINAL_LOAD_WORDS, load_summary, rejected_rows_message
from emailplan.operator.loads import LoadAction as LoadAction  # re-exported for callers
from emailplan.operator.loads import s3_source as s3_source
from emailplan.operator.planspec import PlanSpec, Templates
from emailplan.operator.rules import Event

SENDING_INTERVAL_SECONDS = 1.0  # while sending, status.sent lags the ledger by about this much


@dataclass(frozen=True)
class Observed:
    """Everything one pass looked at; read once, before deciding."""

    name: str
    namespace: str
    generation: int
    spec: PlanSpec
    status: Mapping[str, Any]
    now: datetime
    problems: tuple[str, ...] = ()
    problem_reason: str = "InvalidSpec"
    templates: Templates | None = None
    view: PlanView | None = None
    replicas: int = 0  # the Deployment's spec.replicas (0 when absent)
    registered_here: bool = True  # False on this process's first pass: register once anyway
    backlog_per_replica: int = BACKLOG_PER_REPLICA
    status_interval: float = 5.0
    outage: outages.Outage | None = None  # the data plane did not answer (view is then None)
    source: followup.SourcePlan | None = None  # a follow-up's source plan (None: absent or no follow-up)


@dataclass
class Decision:
    payload: PlanPayload | None = None  # PUT this plan (None: the registered one is current)
    load: LoadAction | None = None
    load_from: FromPlanSource | None = None  # the source and outcome of a fromPlan load
    retry: RetryRequest | None = None  # ask the data plane to retry the done plan
    replicas: int = 0
    status: dict[str, Any] = field(default_factory=dict)  # the one status patch (only changes)
    events: list[Event] = field(default_factory=list)
    requeue_after: float = 5.0
    phase: Phase = Phase.PENDING


def payload_for(
    o: Observed, suspended: bool, *, release: float = ALL_RELEASED, steer: campaign.Steering | None = None
) -> PlanPayload:
    """The plan PUT: spec message and options plus what this pass steers (share, winner, zones, pause)."""
    spec, templates = o.spec, o.templates
    assert templates is not None
    ab = spec.ab_test
    return PlanPayload(
        name=o.name,
        namespace=o.namespace,
        sender=spec.sender,
        reply_to=spec.reply_to,
        subject=templates.subject,
        html=templates.html,
        text=templates.text,
        rate_per_second=spec.rate,
        start_at=spec.start_at,
        suspended=suspended,
        tracking=spec.tracking,
        unsubscribe=Unsubscribe(enabled=spec.unsubscribe),
        ses=SesOptions(
            configuration_set=spec.ses.configuration_set, tags=spec.ses.tags, send_api=spec.ses.send_api
        ),
        variants=list(spec.variants),
        test_percent=ab.test_percent if ab is not None else 0.0,
        winner=steer.winner if steer is not None else None,
        release_percent=release,
        open_zones=None if steer is None or steer.open_zones is None else list(steer.open_zones),
    )


def _previous(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return {}


def _was(status: Mapping[str, Any], kind: str) -> bool:
    return _previous(status, kind).get("status") == "True"


@dataclass
class _Pass:
    """What one pass has worked out so far, shared by the steps of :func:`decide`."""

    o: Observed
    out: Decision
    previous: list[dict[str, Any]]
    counts: PlanCounts
    outage: outages.Verdict
    trip: d.Trip | None = None
    steering: campaign.Steering | None = None
    paused: bool = False
    window_closed: bool = False
    suspended: bool = False
    finished: bool = False
    release: float = 0.0
    loaded: bool = False
    job: LoadJob | None = None
    load_failed: bool = False
    load_final: bool = False
    gate: followup.Gate | None = None  # a follow-up's wait for its source plan
    conditions: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""  # the status message, set by _summary_conditions

    def cond(self, kind: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
        o = self.o
        return d.condition(self.previous, kind, ok, reason, message, now=o.now, generation=o.generation)

    @property
    def steer(self) -> campaign.Steering:
        assert self.steering is not None, "steering is worked out before any step reads it"
        return self.steering


def decide(o: Observed) -> Decision:
    """The whole pass: phase, payload, load, replicas, conditions, status patch and Events."""
    previous = [dict(c) for c in o.status.get("conditions") or [] if isinstance(c, Mapping)]
    out = Decision(requeue_after=o.status_interval)
    view = o.view
    counts = view.counts if view is not None else _counts_of(o.status)
    if o.problems:
        return _invalid(o, out, previous, counts)
    outage = outages.judge(o.outage or outages.from_view(view), o.status, o.now, o.generation)
    if view is None and o.outage is not None:
        return _unreachable(o, out, outage, previous)
    p = _Pass(o, out, previous, counts, outage)
    _steer(p)
    out.phase = _phase(p)
    _replicas(p)
    p.conditions = [p.cond("Valid", True, "SpecValid", "the plan is valid")]
    _recipient_conditions(p)
    _suspension_condition(p)
    _window_conditions(p)
    out.events += p.steer.events
    _summary_conditions(p)
    _status_patch(p)
    return out


def _invalid(o: Observed, out: Decision, previous: list[dict[str, Any]], counts: PlanCounts) -> Decision:
    """A spec with problems: Failed, with the problems as the message; nothing else is decided."""
    message = "; ".join(o.problems)
    out.phase = Phase.FAILED
    if _previous(o.status, "Valid").get("message") != message:
        out.events.append(Event("Warning", o.problem_reason, message[:1000]))

    def cond(kind: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
        return d.condition(previous, kind, ok, reason, message, now=o.now, generation=o.generation)

    conditions = [
        cond("Valid", False, o.problem_reason, message),
        cond("Ready", False, o.problem_reason, message),
        cond("Stalled", True, o.problem_reason, message),
        cond("Reconciling", False, o.problem_reason, ""),
        cond("Complete", False, "Failed", ""),
    ]
    desired = _status(o, counts, Phase.FAILED, 0, message, previous, conditions)
    out.status = d.status_changes(dict(o.status), desired)
    return out


def _steer(p: _Pass) -> None:
    """The gates (circuit breaker, campaign steering, spec.suspend), the payload and the load."""
    o, out, view = p.o, p.out, p.o.view
    p.trip = d.circuit_breaker(
        p.counts.model_dump(),
        max_bounce_rate=o.spec.max_bounce_rate,
        max_complaint_rate=o.spec.max_complaint_rate,
        min_sample=o.spec.min_sample,
    )
    steering = p.steering = campaign.steer(o.spec, o.status, view, p.counts, o.now)
    p.window_closed = steering.window is not None and not steering.window.open
    p.paused = o.spec.suspend or p.trip is not None or steering.pause is not None  # a person must act
    p.suspended = p.paused or p.window_closed
    state = view.state if view is not None else None
    p.finished = state is not None and state.finished
    out.retry = _retry(o)
    p.release = max(view.release_percent if view is not None else 0.0, steering.release_percent)
    from_plan = o.spec.recipients.from_plan
    p.gate = followup.gate(from_plan, o.source, o.now) if from_plan is not None else None
    payload = payload_for(o, p.suspended, release=p.release, steer=steering)
    if view is None or (not p.finished and (view.payload() != payload or not o.registered_here)):
        out.payload = payload
    out.load = None if p.finished else loads.load_action(view, o.spec, o.status, o.now, o.generation)
    if out.load is LoadAction.FROM_PLAN and (p.gate is None or not p.gate.ready):
        out.load = None  # the source plan has not finished, or ``after`` has not passed
    if out.load is LoadAction.FROM_PLAN and p.gate is not None:
        out.load_from = p.gate.source
    p.loaded = view is not None and view.recipients_loaded
    job = p.job = view.load if view is not None else None
    p.load_failed = job is not None and job.state is LoadState.FAILED and job.failure is not None
    p.load_final = p.load_failed and job is not None and job.failure is not None and job.failure.permanent


def _retry_asked(o: Observed) -> tuple[int, PlanState] | None:
    """A retry generation above the last one done, with the plan's state in the ledger."""
    asked, view = o.spec.model.retry, o.view
    if asked is None or view is None or asked.generation <= view.retry_generation:
        return None
    return asked.generation, view.state


def _retry(o: Observed) -> RetryRequest | None:
    """The asked retry, once the ledger says the plan is done (while sending it waits)."""
    asked = _retry_asked(o)
    return RetryRequest(generation=asked[0]) if asked is not None and asked[1] is PlanState.DONE else None


def _retry_waits(o: Observed) -> str | None:
    """What the message adds while an asked retry waits for the send to finish, or None."""
    asked = _retry_asked(o)
    if asked is None or asked[1].finished:
        return None  # done: it runs in this pass; stopped: the plan is being deleted
    return f"retry {asked[0]} waits until this send is done"


def _phase(p: _Pass) -> Phase:
    """The one word for where the plan is; the first that holds wins."""
    o = p.o
    if p.finished:
        return Phase.COMPLETED
    if o.view is None:
        return Phase.PENDING
    if p.load_final and not p.loaded:
        return Phase.FAILED
    if not p.loaded and p.gate is not None and not p.gate.ready:
        return Phase.SCHEDULED
    if not p.loaded:
        return Phase.LOADING
    if p.paused:
        return Phase.SUSPENDED
    if (o.spec.start_at is not None and o.now < o.spec.start_at) or p.window_closed:
        return Phase.SCHEDULED
    if p.steer.holding:
        return Phase.HOLDING
    return Phase.SENDING


def _replicas(p: _Pass) -> None:
    """The Deployment's replicas and when to look again."""
    o, out, view, steering = p.o, p.out, p.o.view, p.steer
    # Below 100 % only the released rows may be sent: pods for them, not for the whole list.
    whole = p.release >= ALL_RELEASED and steering.open_zones is None  # per-recipient window: open zones
    released_backlog = p.counts.backlog if whole or view is None else view.released_backlog
    out.replicas = d.desired_replicas(
        now=o.now,
        start_at=o.spec.start_at,
        suspended=p.suspended or p.finished or steering.holding,
        loaded=p.loaded,
        backlog=released_backlog,
        rate_per_second=o.spec.rate,
        per_pod_rate=o.spec.per_pod_rate,
        max_replicas=o.spec.max_replicas,
        backlog_per_replica=o.backlog_per_replica,
        current=o.replicas,
    )
    if out.phase is Phase.SENDING:
        out.requeue_after = min(o.status_interval, SENDING_INTERVAL_SECONDS)
    takes_at = p.gate.takes_at if p.gate is not None and not p.loaded else None
    for moment in (steering.wake_at, steering.window.next_change if steering.window else None, takes_at):
        if moment is not None and not p.finished:  # a window change or a hold's end: be there on time
            out.requeue_after = max(0.1, min(out.requeue_after, (moment - o.now).total_seconds()))


def _recipient_conditions(p: _Pass) -> None:
    """Recipients: loaded (with counts), loading, or failed with the reason."""
    o, out, job, cond = p.o, p.out, p.job, p.cond
    if p.loaded:
        summary = load_summary(job, p.counts.total)
        p.conditions.append(cond("RecipientsLoaded", True, "Loaded", summary))
        if not _was(o.status, "RecipientsLoaded"):
            out.events.append(Event("Normal", "RecipientsLoaded", summary))
            if job is not None and job.rejected:
                out.events.append(Event("Warning", "RecipientsRejected", rejected_rows_message(job)))
    else:
        where = _source_words(o.spec)
        p.conditions.append(cond("RecipientsLoaded", False, "Loading", f"loading {where}"))
        if out.load is LoadAction.S3 and job is None:  # the first attempt; retries show as LoadFailed
            out.events.append(Event("Normal", "LoadingRecipients", f"loading {where}"))
    if p.load_failed and not p.loaded:
        assert job is not None and job.failure is not None
        reason, message = (
            job.failure.reason.value,
            f"{job.failure.message} ({FINAL_LOAD_WORDS})"
            if p.load_final
            else f"{job.failure.message} (attempt {job.attempts}, retrying)",
        )
        p.conditions.append(cond("LoadFailed", True, reason, message))
        if _previous(o.status, "LoadFailed").get("reason") != reason or not _was(o.status, "LoadFailed"):
            out.events.append(Event("Warning", "LoadFailed", job.failure.message))
    else:
        p.conditions.append(cond("LoadFailed", False, "NoFailure", ""))


def _suspension_condition(p: _Pass) -> None:
    """Suspension: one word (Suspended) for the phase, the condition and the Events."""
    o, out, trip, cond = p.o, p.out, p.trip, p.cond
    was_suspended = _was(o.status, "Suspended")
    if trip is not None:
        p.conditions.append(cond("Suspended", True, trip.reason, trip.message))
        if _previous(o.status, "Suspended").get("reason") != trip.reason:
            out.events.append(Event("Warning", trip.reason, trip.message))
    elif p.steer.pause is not None:
        pause = p.steer.pause
        p.conditions.append(cond("Suspended", True, pause.reason, pause.message))
        if _previous(o.status, "Suspended").get("reason") != pause.reason:
            out.events.append(Event("Warning", pause.reason, pause.message[:1000]))
    elif o.spec.suspend:
        p.conditions.append(cond("Suspended", True, "SuspendedBySpec", "spec.suspend is true"))
        if not was_suspended:
            out.events.append(Event("Normal", "Suspended", "spec.suspend is true: sending stops"))
    else:
        p.conditions.append(cond("Suspended", False, "NotSuspended", ""))
        if was_suspended and not p.finished:
            out.events.append(Event("Normal", "Resumed", "sending resumes"))


def _window_conditions(p: _Pass) -> None:
    """The send window's condition, and an Event when it opens or closes."""
    o, window = p.o, p.steer.window
    if window is not None and o.spec.window is not None:
        p.conditions.append(_window_condition(p.cond, o, window))
        was_open = _previous(o.status, "InSendWindow").get("status")
        now_open = "True" if window.open else "False"
        if was_open != now_open and not p.finished and (was_open is not None or not window.open):
            reason = "WindowOpened" if window.open else "WindowClosed"
            p.out.events.append(Event("Normal", reason, p.conditions[-1]["message"]))


def _account_hold(p: _Pass) -> tuple[str, str] | None:
    """The SES account every plan shares (24-hour quota, SES's review): its conditions and Events
    go on plans with work left; the Ready reason and message when it holds this plan now."""
    o, out, view = p.o, p.out, p.o.view
    active = (not p.finished and out.phase is not Phase.FAILED) or accounts.still_shown(o.status)
    account = accounts.judge(
        view.account if view is not None and active else None, o.status, o.now, o.generation
    )
    p.conditions += account.conditions
    out.events += account.events
    if account.waiting is not None and p.outage.shown is None and out.phase in (Phase.SENDING, Phase.HOLDING):
        return account.waiting
    return None


def _summary_conditions(p: _Pass) -> None:
    """Ready, Reconciling, Stalled and Complete (kstatus), with the outage's word where one shows."""
    o, out, job, outage, cond, steering = p.o, p.out, p.job, p.outage, p.cond, p.steer
    source_wait = p.gate.message if p.gate is not None and not p.gate.ready and not p.loaded else None
    message = source_wait or _message(o, out.phase, p.counts, job, steering)
    if (waits := _retry_waits(o)) is not None:
        message = f"{message}; {waits}"
    load_stalled = p.load_failed and not p.loaded
    stalled = load_stalled or (steering.pause is not None and not p.finished)
    stalled_reason = (
        "LoadFailed" if load_stalled else steering.pause.reason if steering.pause else "NotStalled"
    )
    ready_reason = out.phase.value
    if p.load_final and not p.loaded and job is not None and job.failure is not None:
        stalled_reason = ready_reason = job.failure.reason.value
    if outage.shown is not None:
        message, ready_reason = outage.message, outage.shown.dependency.reason
    if outage.condition.get("type"):
        p.conditions.append(outage.condition)
    out.events += outage.events
    waiting = _account_hold(p)
    held = waiting is not None
    if waiting is not None:
        ready_reason, message = waiting
    finished = p.finished
    p.conditions += [
        cond(
            "Ready",
            outage.shown is None
            and not held
            and out.phase in (Phase.SENDING, Phase.SCHEDULED, Phase.HOLDING, Phase.COMPLETED),
            ready_reason,
            message,
        ),
        cond(
            "Reconciling",
            out.phase in (Phase.PENDING, Phase.LOADING, Phase.SENDING, Phase.HOLDING),
            out.phase.value,
            message if out.phase is not Phase.COMPLETED else "",
        ),
        cond("Stalled", stalled, stalled_reason, message if stalled else ""),
        cond("Complete", finished, "Completed" if finished else out.phase.value, message if finished else ""),
    ]
    p.message = message


def _status_patch(p: _Pass) -> None:
    """The one status patch: what changed against the last status, and the completion Event."""
    o, out, view, counts = p.o, p.out, p.o.view, p.counts
    if p.finished and o.status.get("phase") != Phase.COMPLETED:
        out.events.append(completed_event(counts, view.failures if view is not None else []))
    desired = _status(o, counts, out.phase, out.replicas, p.message, p.previous, p.conditions)
    if view is not None and (view.failures or "failures" in o.status):
        desired["failures"] = [f.model_dump() for f in view.failures]
    desired["recipientsLoaded"] = p.loaded
    desired.update(p.steer.status)
    if p.gate is not None and o.spec.recipients.from_plan is not None:
        shown = o.status.get("audience")
        desired["audience"] = followup.audience_status(
            o.spec.recipients.from_plan, p.gate, p.job, shown if isinstance(shown, Mapping) else None
        )
    if out.phase in (Phase.SENDING, Phase.COMPLETED) or counts.sent > 0:
        desired["startedAt"] = o.status.get("startedAt") or d.format_time(o.now)
    if p.finished:  # a retried plan completes again: its new completion time
        again = o.status.get("phase") != Phase.COMPLETED.value
        desired["completedAt"] = (not again and o.status.get("completedAt")) or d.format_time(o.now)
    asked = o.spec.model.retry
    if view is not None and (asked is not None or view.retry_generation):
        desired["retry"] = {
            "requested": asked.generation if asked else 0,
            "generation": view.retry_generation,
        }
    out.status = d.status_changes(dict(o.status), desired)


def completed_event(counts: PlanCounts, failures: list[FailureReason]) -> Event:
    """The plan's last word: a Warning naming the most frequent reason when anything failed.

    Suppressed addresses are the suppression list doing its job: they are counted,
    and they never make the Event a Warning on their own.
    """
    summary = (
        f"plan completed: {counts.sent} sent, {counts.failed} failed, "
        f"{counts.suppressed} suppressed of {counts.total}"
    )
    if counts.failed <= 0:
        return Event("Normal", "Completed", summary)
    top = next((f for f in failures if not f.suppressed), None)
    why = f"; top reason: {top.reason} ({top.count})" if top is not None else ""
    return Event("Warning", "Completed", (summary + why)[:EVENT_ROWS_CHARS])


def _unreachable(
    o: Observed, out: Decision, outage: outages.Verdict, previous: list[dict[str, Any]]
) -> Decision:
    """The data plane did not answer: keep everything (phase, counts, pods), say what is down.

    The pods keep their work and retry by themselves; scaling them to zero would only
    add churn when the outage ends. Within the grace nothing is written at all.
    """
    try:
        out.phase = Phase(str(o.status.get("phase") or Phase.PENDING.value))
    except ValueError:
        out.phase = Phase.PENDING
    out.replicas = o.replicas
    if outage.shown is None:
        out.requeue_after = max(0.5, min(o.status_interval, outage.recheck_after or o.status_interval))
        return out
    reason = outage.shown.dependency.reason
    ready = d.condition(previous, "Ready", False, reason, outage.message, now=o.now, generation=o.generation)
    desired = {
        "message": outage.message[:4096],
        "conditions": d.merge_conditions(previous, [outage.condition, ready]),
    }
    out.status = d.status_changes(dict(o.status), desired)
    out.events = list(outage.events)
    return out


def _status(
    o: Observed,
    counts: PlanCounts,
    phase: Phase,
    replicas: int,
    message: str,
    previous: list[dict[str, Any]],
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every field the printer columns show, always set, so no column is ever blank."""
    return {
        **counts.status_fields(),
        "phase": phase.value,
        "progress": d.progress(counts.model_dump(), completed=phase is Phase.COMPLETED),
        "replicas": replicas,
        "observedGeneration": o.generation,
        "message": message[:4096],
        "conditions": d.merge_conditions(previous, conditions),
    }


def _counts_of(status: Mapping[str, Any]) -> PlanCounts:
    """The last counts the status showed (a Failed plan keeps showing them)."""
    return PlanCounts.model_validate(d.normalize_counts(dict(status)))


def _source_words(spec: PlanSpec) -> str:
    if spec.recipients.s3 is not None:
        s3 = spec.recipients.s3
        return f"s3://{s3.bucket}/{s3.key}"
    if spec.recipients.config_map_ref is not None:
        return f"ConfigMap {spec.recipients.config_map_ref.name}"
    if spec.recipients.from_plan is not None:
        source = spec.recipients.from_plan
        return f"the {source.outcome.value} recipients of EmailPlan {source.name}"
    return "the inline list"


def _window_condition(
    cond: Callable[..., dict[str, Any]], o: Observed, window: campaign.WindowState
) -> dict[str, Any]:
    """``InSendWindow``: whether sending is allowed now, and when that changes next."""
    assert o.spec.window is not None
    schedule = o.spec.window.describe()
    change = campaign.zoned(o.spec.window, window.next_change) if window.next_change else None
    if window.open:
        return cond("InSendWindow", True, "InsideWindow", f"inside the send window {schedule} until {change}")
    opens = f"; opens at {change}" if change else "; it never opens"
    return cond("InSendWindow", False, "OutsideWindow", f"outside the send window {schedule}{opens}")


def _message(
    o: Observed, phase: Phase, counts: PlanCounts, job: LoadJob | None, steering: campaign.Steering
) -> str:
    window = steering.window
    if phase is Phase.SCHEDULED and o.spec.start_at and o.now < o.spec.start_at:
        return f"waiting for schedule.startAt {d.format_time(o.spec.start_at)}"
    if phase is Phase.SCHEDULED and window is not None and o.spec.window is not None:
        opens = (
            f", opens at {campaign.zoned(o.spec.window, window.next_change)}" if window.next_change else ""
        )
        return f"outside the send window {o.spec.window.describe()}{opens}; {counts.backlog} left"
    if phase is Phase.HOLDING:
        return steering.message
    if phase is Phase.SENDING:
        if steering.release_percent < ALL_RELEASED:
            return f"sending the first {steering.release_percent:g}% of the list at up to {o.spec.rate:g}/s"
        return f"sending at up to {o.spec.rate:g}/s, {counts.backlog} left"
    if phase is Phase.SUSPENDED:
        if steering.pause is not None and not o.spec.suspend:
            return f"suspended: {steering.pause.message}"
        return f"suspended, {counts.backlog} left"
    if phase is Phase.COMPLETED:
        return "all messages handled"
    if phase is Phase.FAILED and job is not None and job.failure is not None:
        return f"loading failed: {job.failure.message}; {FINAL_LOAD_WORDS}"
    if phase is Phase.LOADING:
        if job is not None and job.state is LoadState.FAILED and job.failure is not None:
            return f"loading failed: {job.failure.message}; retrying (attempt {job.attempts})"
        return f"loading {_source_words(o.spec)}"
    return "registering the plan with the data plane"

"""Table tests of the operator's pure decisions: replicas, phase, progress, breaker, validation, rendering."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.decisions import NOW, SPEC, job, observed, view

from emailplan.contract.health import Dependency, DependencyHealth
from emailplan.contract.plans import (
    LoadFailure,
    LoadFailureReason,
    LoadState,
    PlanState,
    RowProblem,
)
from emailplan.contract.recipients import first_recipient
from emailplan.operator import rules as d
from emailplan.operator.decide import LoadAction, Observed, Phase, decide, payload_for
from emailplan.operator.deployment import deployment_name, render_deployment
from emailplan.operator.outages import Outage, deletion_step
from emailplan.operator.planspec import Templates, read_spec
from emailplan.operator.recipients import inline_ndjson
from emailplan.operator.settings import OperatorSettings
from emailplan.operator.validation import check_address, check_templates
from emailplan.sender.rendering import compile_plan, render

LATER = NOW + timedelta(hours=1)
EARLIER = NOW - timedelta(hours=1)


def replicas(**kw: Any) -> int:
    args: dict[str, Any] = dict(
        now=NOW,
        start_at=None,
        suspended=False,
        loaded=True,
        backlog=10_000,
        rate_per_second=14,
        per_pod_rate=50,
        max_replicas=4,
        backlog_per_replica=100,
    )
    args.update(kw)
    return d.desired_replicas(**args)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, 1),
        ({"rate_per_second": 200}, 4),
        ({"rate_per_second": 120}, 3),
        ({"rate_per_second": 1000}, 4),  # capped by maxReplicas
        ({"rate_per_second": 1000, "max_replicas": 10}, 10),
        ({"rate_per_second": 1000, "backlog": 150}, 2),  # capped by the backlog
        ({"rate_per_second": 1000, "backlog": 1}, 1),
        ({"rate_per_second": 1000, "backlog": 50, "current": 3}, 3),  # running pods finish the tail
        ({"rate_per_second": 100, "backlog": 50, "current": 4}, 2),  # but a lower rate still scales down
        ({"backlog": 50, "current": 3, "suspended": True}, 0),
        ({"backlog": 0, "current": 3}, 0),
        ({"backlog": 0}, 0),  # nothing left
        ({"suspended": True}, 0),
        ({"loaded": False}, 0),
        ({"start_at": LATER}, 0),  # before the schedule
        ({"start_at": EARLIER}, 1),
        ({"start_at": NOW}, 1),
    ],
)
def test_desired_replicas(kw: dict[str, Any], expected: int) -> None:
    assert replicas(**kw) == expected


@pytest.mark.parametrize(
    ("counts", "completed", "expected"),
    [
        ({"total": 0}, False, "0%"),
        ({"total": 0}, True, "100%"),
        ({"total": 100, "created": 58}, False, "42%"),
        ({"total": 3, "created": 1, "processing": 1}, False, "33%"),
        ({"total": 1000, "created": 1}, False, "99%"),  # never 100% while something is left
        ({"total": 10, "created": 0}, True, "100%"),
    ],
)
def test_progress(counts: dict[str, int], completed: bool, expected: str) -> None:
    assert d.progress(d.normalize_counts(counts), completed=completed) == expected


def test_normalize_counts_fills_missing_and_ignores_garbage() -> None:
    counts = d.normalize_counts({"total": "7", "sent": None, "opened": -3, "extra": 5, "processing": 2})
    assert counts["total"] == 7 and counts["sent"] == 0 and counts["opened"] == 0
    assert set(d.COUNT_FIELDS) <= set(counts) and "extra" not in counts
    assert d.remaining({**counts, "created": 3}) == 5


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"delivered": 50, "bounced": 49}, None),  # below the minimum sample
        ({"delivered": 95, "bounced": 5}, None),  # exactly 5 % is allowed
        ({"delivered": 94, "bounced": 6}, "BounceRateExceeded"),
        ({"delivered": 1000, "complained": 1}, None),  # 0.1 %
        ({"delivered": 1000, "complained": 2}, "ComplaintRateExceeded"),
        ({"delivered": 80, "bounced": 20, "complained": 10}, "BounceRateExceeded"),
    ],
)
def test_circuit_breaker(counts: dict[str, int], expected: str | None) -> None:
    trip = d.circuit_breaker(
        d.normalize_counts(counts), max_bounce_rate=0.05, max_complaint_rate=0.001, min_sample=100
    )
    assert (trip.reason if trip else None) == expected
    if trip:
        assert "%" in trip.message


def test_condition_keeps_transition_time_while_status_holds() -> None:
    first = d.condition([], "Ready", True, "Sending", "go", now=NOW)
    again = d.condition([first], "Ready", True, "Sending", "still", now=LATER)
    flipped = d.condition([again], "Ready", False, "Paused", "stop", now=LATER)
    assert first["lastTransitionTime"] == again["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert flipped["lastTransitionTime"] == "2026-05-01T13:00:00Z" and flipped["status"] == "False"
    merged = d.merge_conditions([first, {"type": "Valid", "status": "True"}], [flipped])
    assert [c["type"] for c in merged] == ["Ready", "Valid"] and merged[0]["status"] == "False"


def test_status_changes_only_differences() -> None:
    assert d.status_changes({"sent": 1, "phase": "Sending"}, {"sent": 1, "phase": "Sending"}) == {}
    assert d.status_changes({"sent": 1}, {"sent": 2, "phase": "Sending"}) == {"sent": 2, "phase": "Sending"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("news@example.com", True),
        ("Acme News <news@example.com>", True),
        ('"Acme, Inc." <news@example.com>', True),
        ("not an address", False),
        ("Acme <news@>", False),
        ("news@exa mple.com", False),
    ],
)
def test_check_address(value: str, ok: bool) -> None:
    assert (check_address(value) == []) is ok


@pytest.mark.parametrize(
    ("templates", "recipient", "problem"),
    [
        (
            Templates("Hi {{ name }}", "<p>{{ city }}</p>", None),
            {"email": "a@b.co", "vars": {"city": "Oslo"}},
            None,
        ),
        (
            Templates("Hi {{ name }}", None, "{{ city }}"),
            {"email": "a@b.co", "city": "Oslo"},
            None,
        ),  # csv column
        (Templates("Hi {{ nmae }}", None, "x"), {"email": "a@b.co", "name": "A"}, "subject"),
        (Templates("Hi", "<p>{% if %}</p>", None), {"email": "a@b.co"}, "html: template syntax error"),
        (Templates("Hi", None, "{{ ''.__class__.__mro__ }}"), {"email": "a@b.co"}, "text"),
        (Templates("Hi", None, None), {"email": "a@b.co"}, "no body"),
        (Templates("Hi {{ anything }}", None, "x"), None, None),  # S3: only syntax can be checked
    ],
)
def test_check_templates(templates: Templates, recipient: dict[str, Any] | None, problem: str | None) -> None:
    problems = check_templates(templates, recipient)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_first_recipient_is_the_data_planes_reader() -> None:
    """Issue 9 #4: the operator's sample row comes from the one reader (BOM, quoting, case)."""
    first = first_recipient('\ufeff"City","EMAIL",name\r\n\r\nOslo,A@B.co,Ann\r\n', "csv")
    assert first is not None and first.as_context() == {
        "email": "a@b.co",
        "name": "Ann",
        "vars": {"City": "Oslo"},
    }
    jsonl = first_recipient('\n{"email":"a@b.co","vars":{"x":"1"}}\n', "jsonl")
    assert jsonl is not None and jsonl.vars == {"x": "1"}
    assert first_recipient("email\n", "csv") is None
    assert first_recipient("not json\n", "jsonl") is None


def test_inline_ndjson_round_trip() -> None:
    rows = [{"email": f"r{i}@example.com", "vars": {"n": str(i)}} for i in range(3000)]
    body = b"".join(inline_ndjson(rows)).decode()
    assert len(list(inline_ndjson(rows))) > 1  # streamed in chunks
    import json

    assert [json.loads(line) for line in body.splitlines()] == rows


def test_read_spec_defaults_and_payload() -> None:
    spec = read_spec(
        {
            "from": "A <a@example.com>",
            "subject": "s",
            "text": "t",
            "recipients": {"inline": [{"email": "x@example.com"}]},
            "schedule": {"startAt": "2026-05-01T13:00:00Z"},
            "suspend": True,
        },
        OperatorSettings(),
    )
    assert (spec.rate, spec.max_replicas, spec.per_pod_rate) == (14.0, 4, 14.0)
    assert spec.start_at == LATER and spec.recipients_source == "inline"
    assert (spec.max_bounce_rate, spec.max_complaint_rate, spec.min_sample) == (0.05, 0.001, 100)
    o = observed(spec=spec)
    payload = payload_for(o, suspended=True).model_dump(mode="json")
    assert payload["from"] == "A <a@example.com>" and payload["ratePerSecond"] == 14.0
    assert payload["startAt"] == "2026-05-01T13:00:00Z" and payload["suspended"] is True
    assert payload["unsubscribe"] == {"enabled": True} and payload["tracking"] == {
        "opens": True,
        "clicks": False,
    }


def test_chart_per_pod_rate_reaches_plans_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9 #7: the chart sets EMAILPLAN_DEFAULT_PER_POD_RATE; plans without perPodRate use it."""
    monkeypatch.setenv("EMAILPLAN_DEFAULT_PER_POD_RATE", "5")
    without = {k: v for k, v in SPEC.items() if k != "senders"}
    spec = read_spec({**without, "rate": {"perSecond": 20}}, OperatorSettings())
    assert spec.per_pod_rate == 5.0
    assert decide(observed(spec=spec, view=view(counts={"total": 5000, "created": 5000}))).replicas == 4


def test_chart_per_pod_rate_is_not_hidden_by_a_crd_default() -> None:
    """The API server fills CRD defaults before the operator reads a plan: none may hide the setting."""
    root = Path(__file__).resolve().parent.parent
    crd = yaml.safe_load((root / "crds" / "emailplan.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "default" not in spec["senders"]["properties"]["perPodRate"]
    template = (root / "charts" / "emailplan" / "templates" / "operator-deployment.yaml").read_text()
    assert "EMAILPLAN_DEFAULT_PER_POD_RATE" in template and ".Values.sender.perPodRate" in template


def test_template_variables_validation_promises_are_rendered() -> None:
    """Issue 9 #6: ``plan`` and ``message_id`` reach the template through the plan the operator sends."""
    spec = read_spec({**SPEC, "text": "{{ plan }} #{{ message_id }}"}, OperatorSettings())
    payload = payload_for(observed(spec=spec, templates=Templates("s", None, spec.text)), suspended=False)
    plan = compile_plan(payload.sending_spec())
    out = render(
        plan,
        message_id=77,
        email="a@b.co",
        name=None,
        variables={},
        public_url="https://x",
        sign=lambda *a: "t",
    )
    text = email.message_from_bytes(out.raw, policy=email.policy.default).get_body(("plain",))
    assert text is not None and "launch #77" in str(text.get_content())


def test_render_deployment() -> None:
    settings = OperatorSettings(
        sender_image="registry/emailplan:1",
        sender_secret_name=["emailplan-sender"],
        sender_env={"EMAILPLAN_PUBLIC_URL": "http://x"},
    )
    dep = render_deployment(
        plan_name="spring", namespace="mail", plan_uid="u-1", replicas=3, settings=settings
    )
    assert dep["metadata"]["name"] == deployment_name("spring") == "emailplan-spring-sender"
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert dep["metadata"]["labels"]["app.kubernetes.io/component"] == "sender"
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["emailplan", "worker"] and container["image"] == "registry/emailplan:1"
    assert {"name": "EMAILPLAN_PLAN_ID", "value": "u-1"} in container["env"]
    assert {"name": "EMAILPLAN_PUBLIC_URL", "value": "http://x"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "emailplan-sender"}}]
    assert container["resources"]["requests"]["cpu"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    sel = dep["spec"]["selector"]["matchLabels"]
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    # Read-only root filesystem, with a private writable /tmp.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
    assert "imagePullSecrets" not in pod


def test_render_deployment_with_pull_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILPLAN_SENDER_IMAGE_PULL_SECRETS", "regcred, other")
    dep = render_deployment(
        plan_name="p", namespace="n", plan_uid="u", replicas=1, settings=OperatorSettings()
    )
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]


def test_settings_secret_never_in_repr() -> None:
    settings = OperatorSettings(api_key="s3cr3t-key")  # type: ignore[arg-type]
    assert "s3cr3t-key" not in repr(settings) and "s3cr3t-key" not in str(settings.model_dump())


# --- one pass, decided: observe -> decide -> apply (issue 9 #8) -------------------------------------


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def run(o: Observed) -> tuple[Any, dict[str, Any]]:
    """Decide, and the status after the patch is applied (what the next pass observes)."""
    out = decide(o)
    return out, {**o.status, **out.status}


def test_created_suspended_then_resumed() -> None:
    out, status = run(observed(spec_patch={"suspend": True}))
    assert out.payload is not None and out.payload.suspended is True  # registered paused, in one PUT
    assert out.load is LoadAction.S3 and out.replicas == 0 and out.phase is Phase.PENDING
    loading = view(state=PlanState.SUSPENDED, loaded=False, suspended=True, load=job(LoadState.LOADING))
    out, status = run(observed(spec_patch={"suspend": True}, status=status, view=loading))
    assert out.payload is None and out.load is None and out.phase is Phase.LOADING
    loaded = view(state=PlanState.SUSPENDED, suspended=True, load=job(LoadState.LOADED, accepted=300))
    out, status = run(observed(spec_patch={"suspend": True}, status=status, view=loaded))
    assert out.phase is Phase.SUSPENDED and out.replicas == 0 and status["phase"] == "Suspended"
    assert conditions(status)["Suspended"] == ("True", "SuspendedBySpec")
    assert conditions(status)["Complete"][0] == "False"  # a paused list is not a finished one
    out, status = run(observed(status=status, view=loaded, generation=2))
    assert out.payload is not None and out.payload.suspended is False  # resume: the same PUT, one channel
    assert out.phase is Phase.SENDING and out.replicas == 2
    assert [e.reason for e in out.events] == ["Resumed"]
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_suspended_mid_load_keeps_loading_and_sends_nothing() -> None:
    loading = view(state=PlanState.LOADING, loaded=False, load=job(LoadState.LOADING))
    out, status = run(observed(view=loading))
    assert out.phase is Phase.LOADING and out.load is None
    out, status = run(observed(spec_patch={"suspend": True}, status=status, view=loading))
    assert out.payload is not None and out.payload.suspended and out.load is None
    assert out.replicas == 0 and [e.reason for e in out.events] == ["Suspended"]
    assert conditions(status)["Suspended"][0] == "True" and status["phase"] == "Loading"


def test_load_failed_transiently_then_loaded() -> None:
    missing = LoadFailure(reason=LoadFailureReason.UNAVAILABLE, message="reading s3://lists/a.csv: timed out")
    failed = view(
        state=PlanState.LOADING, loaded=False, load=job(LoadState.FAILED, failure=missing, attempts=1)
    )
    out, status = run(observed(view=failed))
    assert conditions(status)["LoadFailed"] == ("True", "Unavailable")
    assert conditions(status)["Stalled"][0] == "True" and "timed out" in status["message"]
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "LoadFailed")]
    assert out.load is None  # backoff: not again within 2 s of the failure
    later = observed(view=failed, status=status, now=NOW + timedelta(seconds=3))
    out, status = run(later)
    assert out.load is LoadAction.S3 and out.events == []  # retried, not reported twice
    rows = [
        RowProblem(row=n, field="email", message="invalid email address") for n in (4, 9, 11, 12, 30, 31, 40)
    ]
    loaded = view(load=job(LoadState.LOADED, accepted=290, rejected=7, duplicates=3, rejected_rows=rows))
    out, status = run(observed(view=loaded, status=status))
    assert (
        conditions(status)["LoadFailed"][0] == "False" and conditions(status)["RecipientsLoaded"][0] == "True"
    )
    assert "290 accepted, 7 rejected, 3 duplicates" in status["conditions"][-1]["message"] or any(
        "290 accepted, 7 rejected, 3 duplicates" in c["message"] for c in status["conditions"]
    )
    rejected = next(e for e in out.events if e.reason == "RecipientsRejected")
    assert all(f"row {n}:" in rejected.message for n in (4, 9, 11, 12, 30, 31, 40))
    out, status = run(observed(view=loaded, status=status))
    assert not [e for e in out.events if e.reason.startswith("Recipients")]  # reported once


def test_future_start_while_suspended() -> None:
    spec = {"suspend": True, "schedule": {"startAt": "2026-05-01T13:00:00Z"}}
    out, status = run(
        observed(spec_patch=spec, view=view(spec=spec, suspended=True, state=PlanState.SUSPENDED))
    )
    assert out.phase is Phase.SUSPENDED and out.replicas == 0 and out.payload is None
    spec = {"schedule": {"startAt": "2026-05-01T13:00:00Z"}}
    out, status = run(observed(spec_patch=spec, status=status, view=view(spec=spec, suspended=True)))
    assert out.phase is Phase.SCHEDULED and out.replicas == 0 and out.payload is not None


def test_breaker_trip_then_manual_resume() -> None:
    counts = {"total": 300, "created": 100, "sent": 200, "delivered": 150, "bounced": 50}
    out, status = run(observed(view=view(counts=counts)))
    assert out.payload is not None and out.payload.suspended  # decided on this pass's counts
    assert out.phase is Phase.SUSPENDED and out.replicas == 0
    assert conditions(status)["Suspended"] == ("True", "BounceRateExceeded")
    assert [(e.type, e.reason) for e in out.events if e.type == "Warning"] == [
        ("Warning", "BounceRateExceeded")
    ]
    # The Event and the condition say which field to raise, and above what, to continue.
    warning = next(e for e in out.events if e.type == "Warning")
    assert "raise spec.safety.maxBounceRate above 25.00% to continue" in warning.message
    suspended = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert "spec.safety.maxBounceRate" in suspended["message"]
    # The owner raises the threshold: the plan resumes with one PUT.
    safer = {"safety": {"maxBounceRate": 0.5}}
    out, status = run(
        observed(spec_patch=safer, status=status, view=view(counts=counts, suspended=True), generation=2)
    )
    assert out.payload is not None and not out.payload.suspended and out.phase is Phase.SENDING
    assert [e.reason for e in out.events] == ["Resumed"]


def test_spec_change_while_sending_is_one_put_and_fast_status() -> None:
    sending = view(counts={"total": 3000, "created": 2900, "sent": 100})
    out, status = run(observed(view=sending))
    assert out.payload is None and out.phase is Phase.SENDING and out.requeue_after == 1.0
    # An operator that just started (or took over from its peer) registers once anyway.
    assert decide(observed(view=sending, registered_here=False)).payload is not None
    out, status = run(observed(spec_patch={"rate": {"perSecond": 200}}, view=sending, status=status))
    assert out.payload is not None and out.payload.rate_per_second == 200 and out.replicas == 4
    idle = observed(view=view(state=PlanState.DONE, counts={"total": 300, "sent": 300}), status=status)
    out, status = run(idle)
    assert out.phase is Phase.COMPLETED and out.requeue_after == 5.0 and out.replicas == 0
    assert conditions(status)["Complete"] == ("True", "Completed") and status["completedAt"]


def test_finished_is_the_ledgers_word_only() -> None:
    """Backlog 0 on a list that is still loading is not Completed: only ``done`` is."""
    out, _ = run(
        observed(view=view(state=PlanState.LOADING, loaded=False, counts={}, load=job(LoadState.LOADING)))
    )
    assert out.phase is Phase.LOADING
    out, _ = run(
        observed(
            view=view(state=PlanState.SUSPENDED, suspended=True, counts={}), spec_patch={"suspend": True}
        )
    )
    assert out.phase is Phase.SUSPENDED


def test_failed_plan_shows_message_and_every_column() -> None:
    out, status = run(observed(problems=("subject: 'nmae' is undefined",)))
    assert out.phase is Phase.FAILED and out.payload is None and out.load is None and out.replicas == 0
    assert status["message"] == "subject: 'nmae' is undefined"
    for column in ("total", "sent", "failed", "opened", "progress", "replicas"):
        assert column in status
    assert conditions(status)["Stalled"][0] == "True" and conditions(status)["Ready"][0] == "False"
    assert [e.type for e in out.events] == ["Warning"]
    out, _ = run(observed(problems=("subject: 'nmae' is undefined",), status=status))
    assert out.events == [] and out.status == {}  # same problem: no new Event, no patch


def test_plan_counts_are_exported_per_plan_and_forgotten_with_the_plan() -> None:
    """The dashboard's per-plan bounce and complaint rates read these gauges."""
    from prometheus_client import REGISTRY

    from emailplan.operator import metrics

    labels = {"namespace": "mail", "plan": "launch", "count": "bounced"}
    metrics.publish_counts("mail", "launch", {"bounced": 7, "delivered": 93, "phase": "Sending"})
    assert REGISTRY.get_sample_value("emailplan_plan_messages", labels) == 7
    assert REGISTRY.get_sample_value("emailplan_plan_messages", {**labels, "count": "delivered"}) == 93
    metrics.forget_counts("mail", "launch")
    assert REGISTRY.get_sample_value("emailplan_plan_messages", labels) is None


# --- outages of the data plane and its dependencies (issue 20 #1) ------------------------------------------


def condition_of(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


SENDING_COUNTS = {"total": 3000, "created": 2000, "sent": 1000}


@pytest.mark.parametrize(
    ("dependency", "reason", "words"),
    [
        (Dependency.DATABASE, "DatabaseUnavailable", "database"),
        (Dependency.API, "DataPlaneUnreachable", "data-plane API"),
    ],
)
def test_data_plane_outage_is_shown_after_a_grace_and_clears_with_an_event(
    dependency: Dependency, reason: str, words: str
) -> None:
    sending = view(counts=SENDING_COUNTS)
    out, status = run(observed(view=sending, replicas=2))
    assert conditions(status)["DataPlaneAvailable"] == ("True", "Available")
    down = Outage(dependency, "what the client saw", since=NOW)
    # A blip shorter than the grace changes nothing: no patch, no Event, pods kept, looked at again soon.
    out, _ = run(observed(view=None, outage=down, status=status, now=NOW + timedelta(seconds=2), replicas=2))
    assert out.status == {} and out.events == [] and out.replicas == 2 and out.payload is None
    assert out.load is None and out.requeue_after <= 5.0
    # Past the grace: Ready=False naming it, since when, one Warning; counts and phase kept.
    later = NOW + timedelta(seconds=6)
    out, status = run(observed(view=None, outage=down, status=status, now=later, replicas=2))
    assert conditions(status)["DataPlaneAvailable"] == ("False", reason)
    assert conditions(status)["Ready"] == ("False", reason)
    assert condition_of(status, "DataPlaneAvailable")["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    assert words in status["message"] and "since 2026-05-01T12:00:00Z" in status["message"]
    assert status["phase"] == "Sending" and status["sent"] == 1000 and out.replicas == 2
    assert out.payload is None and out.load is None
    assert [(e.type, e.reason) for e in out.events] == [("Warning", reason)]
    assert words in out.events[0].message
    # An operator restarted mid-outage first sees it now: the start stays the one in status, no new Event.
    again = Outage(dependency, "what the client saw", since=NOW + timedelta(seconds=60))
    out, status = run(observed(view=None, outage=again, status=status, now=NOW + timedelta(seconds=61)))
    assert out.events == [] and "since 2026-05-01T12:00:00Z" in status["message"]
    assert condition_of(status, "DataPlaneAvailable")["lastTransitionTime"] == "2026-05-01T12:00:00Z"
    # Back: all clear, a Normal Event with how long it lasted.
    out, status = run(observed(view=sending, status=status, now=NOW + timedelta(seconds=90), replicas=2))
    assert conditions(status)["DataPlaneAvailable"] == ("True", "Available")
    assert conditions(status)["Ready"] == ("True", "Sending") and "left" in status["message"]
    assert [(e.type, e.reason) for e in out.events] == [("Normal", "DataPlaneRecovered")]
    assert "after 90s" in out.events[0].message
    out, status = run(observed(view=sending, status=status, now=NOW + timedelta(seconds=91), replicas=2))
    assert out.events == []


@pytest.mark.parametrize(
    ("dependency", "reason"),
    [(Dependency.QUEUE, "QueueUnavailable"), (Dependency.SES, "SesUnavailable")],
)
def test_dependency_the_api_reports_down_makes_the_plan_not_ready(
    dependency: Dependency, reason: str
) -> None:
    health = [
        DependencyHealth(dependency=dependency, available=False, since=NOW, message="connect timeout"),
        DependencyHealth(dependency=Dependency.DATABASE, available=True, since=NOW - timedelta(days=1)),
    ]
    sick = view(counts=SENDING_COUNTS).model_copy(update={"dependencies": health})
    out, status = run(observed(view=sick, now=NOW + timedelta(seconds=1), replicas=2))
    assert (
        "DataPlaneAvailable" not in conditions(status)
        or conditions(status)["DataPlaneAvailable"][0] == "True"
    )
    out, status = run(observed(view=sick, status=status, now=NOW + timedelta(seconds=30), replicas=2))
    assert conditions(status)["DataPlaneAvailable"] == ("False", reason)
    assert conditions(status)["Ready"] == ("False", reason) and status["phase"] == "Sending"
    assert "since 2026-05-01T12:00:00Z" in status["message"] and "connect timeout" in status["message"]
    assert [(e.type, e.reason) for e in out.events] == [("Warning", reason)]


# --- permanent load failures end the plan as Failed (issue 20 #3) -------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        LoadFailureReason.NOT_A_LIST,
        LoadFailureReason.EMPTY_LIST,
        LoadFailureReason.OBJECT_MISSING,
        LoadFailureReason.ACCESS_DENIED,
    ],
)
def test_permanent_load_failure_fails_the_plan_until_the_spec_changes(reason: LoadFailureReason) -> None:
    failure = LoadFailure(reason=reason, message="s3://lists/a.csv: no", permanent=True)
    failed = view(
        state=PlanState.LOADING, loaded=False, load=job(LoadState.FAILED, failure=failure, attempts=1)
    )
    out, status = run(observed(view=failed))
    assert out.phase is Phase.FAILED and status["phase"] == "Failed" and out.load is None
    assert conditions(status)["LoadFailed"] == ("True", reason.value)
    assert conditions(status)["Stalled"] == ("True", reason.value)
    assert conditions(status)["Ready"] == ("False", reason.value)
    assert "s3://lists/a.csv: no" in status["message"] and "retrying" not in status["message"]
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "LoadFailed")]
    for later in (NOW + timedelta(minutes=10), NOW + timedelta(days=1)):  # never retried alone
        out, status = run(observed(view=failed, status=status, now=later))
        assert out.load is None and out.events == [] and out.phase is Phase.FAILED
    # The owner fixes the object and edits the plan: one new attempt.
    out, status = run(observed(view=failed, status=status, now=later, generation=2))
    assert out.load is LoadAction.S3
    out, status = run(observed(view=failed, status=status, now=later + timedelta(hours=1), generation=2))
    assert out.load is None


def test_transient_load_failure_keeps_retrying_with_backoff() -> None:
    failure = LoadFailure(
        reason=LoadFailureReason.UNAVAILABLE, message="reading s3://lists/a.csv failed: 503"
    )
    failed = view(
        state=PlanState.LOADING, loaded=False, load=job(LoadState.FAILED, failure=failure, attempts=3)
    )
    out, status = run(observed(view=failed))
    assert out.phase is Phase.LOADING and out.load is None and "retrying" in status["message"]
    out, status = run(observed(view=failed, status=status, now=NOW + timedelta(seconds=9)))
    assert out.load is LoadAction.S3 and out.phase is Phase.LOADING


# --- deleting a plan while the data plane is down (issue 20 #2) ---------------------------------------------


@pytest.mark.parametrize(
    ("waited", "attempt", "release", "delay", "event"),
    [
        (0, 0, False, 5.0, "DeletionWaiting"),  # first failure: said at once
        (5, 1, False, 10.0, None),  # backoff doubles, quietly
        (35, 3, False, 40.0, None),
        (100, 5, False, 60.0, None),  # capped at a minute
        (300, 10, False, 60.0, "DeletionWaiting"),  # reminded now and then
        (590, 12, False, 10.0, None),  # never waits past the bound
        (600, 13, True, 0.0, "FinalizerReleased"),
        (4000, 50, True, 0.0, "FinalizerReleased"),
    ],
)
def test_deletion_retries_with_backoff_then_releases_the_finalizer(
    waited: int, attempt: int, release: bool, delay: float, event: str | None
) -> None:
    status = {"total": 1000, "sent": 400, "created": 600}
    step = deletion_step(
        waited=timedelta(seconds=waited),
        attempt=attempt,
        bound_seconds=600,
        status=status,
        what="the data-plane API",
    )
    assert step.release is release and step.delay == pytest.approx(delay)
    assert (step.event.reason if step.event else None) == event
    if release:
        assert step.event is not None and step.event.type == "Warning"
        assert "400 of 1000 sent" in step.event.message and "600 not sent" in step.event.message
        assert "the data-plane API" in step.event.message
